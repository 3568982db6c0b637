"""What medlite.edge adds on top of the LiteRT runtime, and what the decoding worker pool gains.

Usage: python benchmarks/edge_overhead.py [--data-dir ../shared/data] [--calls 500]

1. predict on a prepared input (``Model.predict_input``: interpreter call, dequantization, decision,
   result record) against the raw ``set_tensor`` / ``invoke`` / ``get_tensor`` on the same
   interpreter settings and model file, calls interleaved so machine noise hits both alike; medians.
   Models: a MobileNetV2 (alpha 1.0, 224x224 grey, the cart-size case) and the 28x28 demo CNN,
   both fp32 and int8 (calibrated on real chest X-rays).
2. ``medlite predict``'s folder run over the shared DICOMs repeated to 200 files: decoding in a
   pool of 2 worker threads against strictly sequential decode-then-infer, same model.
"""

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from medlite.convert.contract_writer import embed_contract
from medlite.convert.export import convert
from medlite.convert.pipeline import input_spec_of
from medlite.edge import batch, datasets, load
from medlite.edge.backends.litert import runtime
from medlite.edge.contract import Contract, InputSpec, Preprocess
from medlite.edge.frames import Frame
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
    raw = runtime().Interpreter(model_path=str(path), num_threads=threads)
    raw.allocate_tensors()
    i_in, i_out = raw.get_input_details()[0]["index"], raw.get_output_details()[0]["index"]
    for _ in range(50):  # warm-up both
        raw.set_tensor(i_in, x)
        raw.invoke()
        raw.get_tensor(i_out)
        model.predict_input(x)
    t_raw, t_med = np.empty(calls), np.empty(calls)
    clock = time.perf_counter
    for k in range(calls):
        t0 = clock()
        raw.set_tensor(i_in, x)
        raw.invoke()
        raw.get_tensor(i_out)
        t1 = clock()
        model.predict_input(x)
        t2 = clock()
        t_raw[k], t_med[k] = t1 - t0, t2 - t1
    r, m = np.median(t_raw) * 1e6, np.median(t_med) * 1e6
    return {"model": path.name, "raw_us": r, "medlite_us": m, "ratio": m / r, "added_us": m - r}


def folder_run(model_path: Path, dicom_dir: Path, copies: int) -> dict:
    model = load(model_path, backend="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(copies):
            for f in sorted(dicom_dir.glob("*.dcm")):
                target = Path(tmp) / f"{i:03d}_{f.name}"
                shutil.copy(f, target)
                files.append(str(target))
        out = {"files": len(files)}
        list(batch.run(model, files[:8], workers=2))  # warm caches and imports
        for name, workers in (("sequential_s", 0), ("pool_s", 2), ("sequential_again_s", 0), ("pool_again_s", 2)):
            t0 = time.perf_counter()
            n = sum(1 for r in batch.run(model, files, workers=workers) if r["status"] == "ok")
            out[name] = time.perf_counter() - t0
            assert n == len(files)
    out["speedup"] = (out["sequential_s"] + out["sequential_again_s"]) / (out["pool_s"] + out["pool_again_s"])
    return out


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
        f = folder_run(models[-1], data_dir / "dicom", copies=50)
        print(f"\nfolder run, {f['files']} DICOMs (the 4 shared files x 50), int8 28x28 model: sequential "
              f"{f['sequential_s']:.2f} s / {f['sequential_again_s']:.2f} s, pool of 2 {f['pool_s']:.2f} s / "
              f"{f['pool_again_s']:.2f} s, speedup {f['speedup']:.2f}x")


if __name__ == "__main__":
    main()
