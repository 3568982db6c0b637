"""`medlite serve` under load and faults, with real peers on localhost.

    python benchmarks/serve_load.py MODEL --data-dir ../shared/data

1. A burst: 500 real DICOMs (the shared X-ray and ultrasound files and pydicom's 30-frame JPEG cine, each
   copy with its own SOP Instance UID) sent over one association by a pynetdicom SCU. Reported: the time
   until all are acknowledged, until all reports are at the PACS (pynetdicom's storescp), the node's
   resident memory after 100 and after 500 images and once the burst is over, against ``medlite predict
   --workers 2`` on the same files.
2. The faults of the issue's bar: the files sent, the PACS stopped, 20 more sent, the node killed with
   SIGKILL, both restarted; then every acknowledged image must have a report at the PACS that references it
   and names the model's SHA-256, and the node's log must hold no patient name or birth date.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_serve import copies, free_port, reports_at, send, start_node, start_pacs, texts_and_codes  # noqa: E402


def memory_mb(pid: int, key: str = "VmRSS") -> float:
    """A process's resident memory (VmRSS) or its peak (VmHWM), from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def wait_for(predicate, timeout: float = 600) -> float:
    t0 = time.perf_counter()
    while not predicate():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError
        time.sleep(0.1)
    return time.perf_counter() - t0


def made_four(f: Path, folder: Path) -> Path:
    """A chest film's copy whose patient is 4 years old (as the tests' dicom_dir); other files as they are."""
    ds = pydicom.dcmread(f)
    if ds.get("Modality") in ("CR", "DX"):
        ds.PatientAge = "004Y"
        if ds.get("PatientBirthDate") and ds.get("StudyDate"):
            ds.PatientBirthDate = f"{int(ds.StudyDate[:4]) - 4:04d}{ds.StudyDate[4:]}"
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / f.name)
    return folder / f.name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MEDLITE_DATA_DIR", "../shared/data")))
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--children", action="store_true",
                    help="the chest films' patients made 4 years old, so that the paediatric model analyses them "
                         "(and draws their heatmaps) instead of rejecting them by age")
    ap.add_argument("--node-args", default="", help="more arguments of the burst's node, e.g. --no-heatmap (the "
                                                    "cost of the heatmap pictures, against a run without)")
    args = ap.parse_args()
    from pydicom.data import get_testdata_file

    from medlite.edge import load

    model = args.model.resolve()
    sha = load(str(model)).sha256
    sources = sorted((args.data_dir / "dicom").resolve().glob("*.dcm")) + [Path(get_testdata_file(
        "examples_ybr_color.dcm"))]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.children:
            sources = [made_four(f, tmp / "sources") for f in sources]
        images = copies(sources, args.images, tmp / "images")

        # 1. The burst.
        pacs_port, node_port = free_port(), free_port()
        pacs = start_pacs(tmp / "pacs", pacs_port)
        node = start_node(model, tmp / "node", node_port, "--forward", f"127.0.0.1:{pacs_port}:PACS",
                          *args.node_args.split())
        memory: dict[int, float] = {}

        def watch():
            while node.proc.poll() is None and len(memory) < 2:
                done = sum(1 for _ in open(tmp / "node" / "results.jsonl")) if (tmp / "node" / "results.jsonl").exists() else 0
                for mark in (100, args.images):
                    if done >= mark and mark not in memory:
                        memory[mark] = memory_mb(node.proc.pid)
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t0 = time.perf_counter()
        statuses = send(images, node_port)
        acked = time.perf_counter() - t0
        wait_for(lambda: len(reports_at(tmp / "pacs")) >= args.images)
        at_pacs = time.perf_counter() - t0
        watcher.join(timeout=10)
        time.sleep(2)  # the node is idle: what it holds between bursts
        settled, peak = memory_mb(node.proc.pid), memory_mb(node.proc.pid, "VmHWM")
        node.stop()
        pacs.stop()
        ok = sum(s == 0 for s in statuses.values())
        # The same burst into pynetdicom's storescp, which only stores: what the sender and the network allow.
        port = free_port()
        plain = start_pacs(tmp / "plain", port)
        t0 = time.perf_counter()
        subprocess_free = send(images, port, called="PACS")
        plain_s = time.perf_counter() - t0
        plain.stop()
        assert all(v == 0 for v in subprocess_free.values())
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "medlite", "predict", str(model), str(tmp / "images"), "-q",
                        "--out", str(tmp / "predict.jsonl")], cwd=tempfile.gettempdir())
        predict_s = time.perf_counter() - t0
        print(f"## Burst of {args.images} images over one association{' (node: ' + args.node_args + ')' if args.node_args else ''}\n")
        print("| measure | value |\n| --- | ---: |")
        print(f"| acknowledged (status 0x0000) | {ok} of {args.images} |")
        print(f"| all acknowledged after | {acked:.1f} s ({args.images / acked:.0f} images/s) |")
        print(f"| the same burst into pynetdicom's storescp (stores only) | {plain_s:.1f} s "
              f"({args.images / plain_s:.0f} images/s) |")
        print(f"| all {args.images} reports at the PACS after | {at_pacs:.1f} s ({args.images / at_pacs:.1f} images/s) |")
        print(f"| `medlite predict --workers 2` on the same files | {predict_s:.1f} s |")
        print(f"| node resident memory after 100 / {args.images} images / 2 s after the burst | "
              f"{memory.get(100, 0):.0f} / {memory.get(args.images, 0):.0f} / {settled:.0f} MB (peak {peak:.0f} MB) |")

        # 2. The faults of the bar.
        out, pacs_dir = tmp / "fault-node", tmp / "fault-pacs"
        pacs_port, node_port = free_port(), free_port()
        forward = ("--forward", f"127.0.0.1:{pacs_port}:PACS")
        pacs = start_pacs(pacs_dir, pacs_port)
        node = start_node(model, out, node_port, *forward)
        first = copies(sources, len(sources), tmp / "first")
        acked = {u for u, s in send(first, node_port).items() if s == 0}
        wait_for(lambda: len(reports_at(pacs_dir)) >= len(acked), timeout=120)
        pacs.stop()
        more = copies(sources, 20, tmp / "more")
        acked |= {u for u, s in send(more, node_port).items() if s == 0}
        node.stop(signal.SIGKILL)
        left = len(list((out / "incoming").glob("*.dcm")))
        waiting = len(list((out / "outbox").glob("*.dcm")))
        pacs = start_pacs(pacs_dir, pacs_port)
        node = start_node(model, out, node_port, *forward)
        wait_for(lambda: set(reports_at(pacs_dir)) >= acked, timeout=300)
        node.stop()
        pacs.stop()
        reports = reports_at(pacs_dir)
        named = sum(f"model SHA-256 {sha}" in texts_and_codes(reports[u]) for u in acked)
        log = (tmp / "fault-node.log").read_text()
        leaked = [k for f in sources for k in ("PatientName", "PatientBirthDate")
                  if len(str(pydicom.dcmread(f, stop_before_pixels=True).get(k, "") or "")) >= 3
                  and str(pydicom.dcmread(f, stop_before_pixels=True).get(k)) in log]
        print("\n## Faults: PACS stopped, 20 more images, the node killed with SIGKILL, both restarted\n")
        print(f"acknowledged {len(acked)}; at the kill: {left} image(s) not yet reported, {waiting} report(s) in "
              f"the outbox; after the restart: {sum(u in reports for u in acked)} of {len(acked)} acknowledged "
              f"images have a report at the PACS, {named} name the model's SHA-256; reports at the PACS: "
              f"{len(list(pacs_dir.glob('*')))}; patient names or birth dates in the node's log: {len(leaked)}")


if __name__ == "__main__":
    main()
