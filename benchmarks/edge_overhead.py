"""What medlite.edge adds on top of the LiteRT runtime, and what the decoding worker pool gains.

Usage: python benchmarks/edge_overhead.py [--data-dir ../shared/data] [--calls 500]

1. predict on a prepared input (``Model.predict_input``: interpreter call, dequantization, decision,
   result record) against the raw ``set_tensor`` / ``invoke`` / ``get_tensor`` on the same
   interpreter settings and model file, calls interleaved (alternating which goes first) so machine
   noise hits both alike; medians.
   Models: a MobileNetV2 (alpha 1.0, 224x224 grey, the cart-size case) and the 28x28 demo CNN,
   both fp32 and int8 (calibrated on real chest X-rays).
2. ``medlite predict``'s folder run over the shared DICOMs repeated to 200 files: decoding in a
   pool of 2 worker processes against strictly sequential decode-then-infer, same model.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from medlite.convert.contract_writer import embed_contract
from medlite.convert.export import convert
from medlite.convert.pipeline import input_spec_of
from medlite.edge import load
from medlite.measure import datasets
from medlite.edge.contract import Contract, InputSpec, Preprocess
from medlite.edge.preprocess import prepare
from medlite.edge.readers import read
from medlite.train.models import build


def make_model(folder: Path, family: str, size: int, variant: str, calibration: np.ndarray, **options) -> Path:
    keras_model = build(family, input_shape=(size, size, 1), num_classes=2, **options)
    tfl = convert(keras_model, variant, calibration=calibration, n_calibration=len(calibration))
    contract = Contract(input=input_spec_of(tfl), labels=("normal", "pneumonia"), positive_index=1, threshold=0.5,
                        preprocess=Preprocess(color="grey"), provenance={"variant": variant})
    path = folder / f"{family}_{size}_{variant}.tflite"
    path.write_bytes(embed_contract(tfl, contract))
    return path


def overhead(path: Path, calls: int, threads: int | None) -> dict:
    model = load(path, backend="cpu", threads=threads)
    spec = model.contract.input
    (frame,) = read(np.full((spec.height, spec.width), 128, np.uint8))
    x = model.prepare(frame)
    # The raw calls go to the very interpreter medlite holds: two interpreters of one model differ by
    # more than medlite's overhead (memory placement, thread pools; whichever is created first is slower
    # here), so only the same instance isolates what medlite adds.
    raw = model._session._interp
    i_in, i_out = raw.get_input_details()[0]["index"], raw.get_output_details()[0]["index"]
    for _ in range(50):  # warm-up both
        raw.set_tensor(i_in, x)
        raw.invoke()
        raw.get_tensor(i_out)
        model.predict_input(x)
    t_raw, t_med = np.empty(calls), np.empty(calls)
    clock = time.perf_counter
    def raw_call():
        raw.set_tensor(i_in, x)
        raw.invoke()
        raw.get_tensor(i_out)

    for k in range(calls):
        # Alternate which goes first, so neither pays for the other's after-effects (caches, spinning threads).
        first, second = (raw_call, lambda: model.predict_input(x)) if k % 2 == 0 else \
            (lambda: model.predict_input(x), raw_call)
        t0 = clock()
        first()
        t1 = clock()
        second()
        t2 = clock()
        a, b = t1 - t0, t2 - t1
        t_raw[k], t_med[k] = (a, b) if k % 2 == 0 else (b, a)
    r, m = np.median(t_raw) * 1e6, np.median(t_med) * 1e6
    return {"model": path.name, "raw_us": r, "medlite_us": m, "ratio": m / r, "added_us": m - r}


def breakdown(path: Path, calls: int) -> dict:
    """Where the added time goes: raw calls, the backend session, Model.run, predict_input (same interpreter)."""
    model = load(path, backend="cpu")
    (frame,) = read(np.full((model.contract.input.height, model.contract.input.width), 128, np.uint8))
    x = model.prepare(frame)
    raw = model._session._interp
    i_in, i_out = raw.get_input_details()[0]["index"], raw.get_output_details()[0]["index"]

    def raw_call():
        raw.set_tensor(i_in, x)
        raw.invoke()
        raw.get_tensor(i_out)

    steps = {"raw": raw_call, "session.run": lambda: model._session.run(x), "Model.run": lambda: model.run(x),
             "predict_input": lambda: model.predict_input(x)}
    for _ in range(50):
        for f in steps.values():
            f()
    times = {k: [] for k in steps}
    for k in range(calls):
        for name, f in list(steps.items())[:: 1 if k % 2 == 0 else -1]:
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) * 1e6 for name, t in times.items()}


def folder_run(model_path: Path, dicom_dir: Path, copies: int) -> dict:
    """`medlite predict` on a folder, as a user runs it: a fresh process each time, pool against sequential."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "dicoms"
        folder.mkdir()
        for i in range(copies):
            for f in sorted(dicom_dir.glob("*.dcm")):
                shutil.copy(f, folder / f"{i:03d}_{f.name}")
        n = len(list(folder.iterdir()))
        times: dict[int, list[float]] = {0: [], 2: []}
        for workers in (0, 2, 0, 2):  # alternated, twice each
            out = Path(tmp) / f"out{workers}.jsonl"
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "medlite", "predict", str(model_path), str(folder), "--quiet",
                            "--backend", "cpu", "--workers", str(workers), "--out", str(out)], check=True,
                           capture_output=True, cwd=tmp)
            times[workers].append(time.perf_counter() - t0)
            assert sum(1 for _ in out.open()) == n
    return {"files": n, "sequential_s": times[0], "pool_s": times[2], "speedup": sum(times[0]) / sum(times[2])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=os.environ.get("MEDLITE_DATA_DIR", "../shared/data"))
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    data_dir = Path(args.data_dir)
    imgs = datasets.load("pneumoniamnist", data_dir).splits["train"].images[:100]
    cal28 = imgs[..., None].astype(np.float32) / 255
    spec224 = InputSpec(224, 224, 1)
    cal224 = np.stack([prepare(f.pixels, Preprocess(), spec224) for p in sorted((data_dir / "images").glob("*.png"))
                       for f in read(p)] + [prepare(f.pixels, Preprocess(), spec224)
                                           for p in sorted((data_dir / "dicom").glob("*.dcm")) for f in read(p)])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = [make_model(tmp, "mobilenet_v2", 224, v, cal224, alpha=1.0) for v in ("fp32", "int8")]
        models += [make_model(tmp, "small_cnn", 28, v, cal28) for v in ("fp32", "int8")]
        print(f"predict_input vs raw set_tensor/invoke/get_tensor, median of {args.calls} interleaved calls, "
              f"threads={args.threads or 'default'}")
        print("| model | raw (us) | medlite (us) | ratio | added (us) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for m in models:
            r = overhead(m, args.calls, args.threads)
            print(f"| {r['model']} | {r['raw_us']:.1f} | {r['medlite_us']:.1f} | {r['ratio']:.3f} | "
                  f"{r['added_us']:+.1f} |", flush=True)
        b = breakdown(models[1], args.calls)
        print(f"\nbreakdown on {models[1].name}, medians of {args.calls} calls (us): " +
              ", ".join(f"{k} {v:.1f} ({v - b['raw']:+.1f})" for k, v in b.items()))
        f = folder_run(models[-1], data_dir / "dicom", copies=50)
        seq = " / ".join(f"{t:.2f} s" for t in f["sequential_s"])
        pool = " / ".join(f"{t:.2f} s" for t in f["pool_s"])
        print(f"\n`medlite predict` on a folder of {f['files']} DICOMs (the 4 shared files x 50), int8 28x28 model, "
              f"whole command timed: --workers 0 (sequential) {seq}; --workers 2 (pool) {pool}; "
              f"speedup {f['speedup']:.2f}x")


if __name__ == "__main__":
    main()
