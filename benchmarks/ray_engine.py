"""``medlite predict --engine ray`` against the local engine (``--workers 2``) on the same 2,000 real chest DICOMs.

    python benchmarks/ray_engine.py MODEL --data-dir ../shared/data

The files: the shared CR (JPEG 2000, 1955x1841) and DX (1024x1024) chest films, their patients made 4 years old
(so that the paediatric demo model answers them rather than rejecting them by age), cycled, each copy with its
own SOP Instance UID. Each run is a fresh `medlite predict` process, Ray's start-up included (a local cluster of
this machine's CPUs, started and stopped by the command); runs alternate. Prints wall times, their ratio,
1 against 2 actors, what Ray adds per file, and whether the records are the same file by file (all fields but
latency_ms).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

SOURCES = ("RG1_J2KI.dcm", "nih_cxr14_dx_nofinding.dcm")


def make_folder(data_dir: Path, folder: Path, n: int) -> None:
    sources = []
    for name in SOURCES:
        ds = pydicom.dcmread(data_dir / "dicom" / name)
        ds.PatientAge = "004Y"
        if ds.get("PatientBirthDate") and ds.get("StudyDate"):
            ds.PatientBirthDate = f"{int(ds.StudyDate[:4]) - 4:04d}{ds.StudyDate[4:]}"
        sources.append(ds)
    folder.mkdir(parents=True)
    for i in range(n):
        ds = sources[i % len(sources)]
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f"img{i:05d}.dcm")


def run(model: str, folder: Path, out: Path, *extra: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medlite", "predict", model, str(folder), "--out", str(out), "-q", *extra],
                   check=False, cwd=folder.parent)
    return time.perf_counter() - t0


def records(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "latency_ms"} for line in path.read_text().splitlines()]


def ray_start_stop() -> float:
    code = ("import os, time; os.environ['RAY_BACKEND_LOG_LEVEL'] = 'fatal'; t0 = time.perf_counter(); import ray; "
            "ray.init(include_dashboard=False, log_to_driver=False, logging_level='ERROR'); ray.shutdown(); "
            "print(time.perf_counter() - t0)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                cwd=tempfile.gettempdir()).stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    model = os.path.abspath(args.model)
    with tempfile.TemporaryDirectory(prefix="medlite-ray-") as tmp:
        folder = Path(tmp) / "films"
        make_folder(args.data_dir, folder, args.files)
        times: dict[str, list[float]] = {"local --workers 2": [], "ray, 2 actors": [], "ray, 1 actor": []}
        outs = {}
        for r in range(args.rounds):
            for name, extra in (("local --workers 2", ("--workers", "2")),
                                ("ray, 2 actors", ("--engine", "ray", "--actors", "2")),
                                ("ray, 1 actor", ("--engine", "ray", "--actors", "1"))):
                out = Path(tmp) / f"{name.split(',')[0].split()[0]}-{name[-8:].strip()}-{r}.jsonl"
                times[name].append(run(model, folder, out, *extra))
                outs[name] = out
        start = [ray_start_stop() for _ in range(2)]
        local = records(outs["local --workers 2"])
        print(f"{args.files} files; {sys.platform}, {os.cpu_count()} CPUs")
        for name, ts in times.items():
            print(f"{name}: {', '.join(f'{t:.1f}' for t in ts)} s (best {min(ts):.1f} s, "
                  f"{min(ts) / min(times['local --workers 2']):.2f}x local)")
        same = {name: records(out) == local for name, out in outs.items()}
        print(f"records equal to the local run's, file by file: {same}; {len(local)} records, "
              f"{sum(r['status'] == 'ok' for r in local)} ok")
        best_ray, best_local = min(times["ray, 2 actors"]), min(times["local --workers 2"])
        print(f"Ray start and stop alone: {', '.join(f'{t:.1f}' for t in start)} s; per file, ray 2 actors less "
              f"its start-up: {(best_ray - min(start)) / args.files * 1e3:.2f} ms against local "
              f"{best_local / args.files * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
