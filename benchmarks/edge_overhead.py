"""What medlite.edge adds on top of the LiteRT runtime, and what the decoding worker pool gains.

Usage: python benchmarks/edge_overhead.py [--data-dir ../shared/data] [--calls 600] [--rounds 9]

1. a prediction on a prepared input (``Model.classify``, the one inference path: interpreter call,
   dequantization, decision, the Prediction) against the raw ``set_tensor`` / ``invoke`` / ``get_tensor`` on the same
   interpreter settings and model file, calls interleaved (alternating which goes first) so machine
   noise hits both alike; in rounds, each with the interpreters loaded afresh: each round's medians, then
   the median round and the range.
   Models: a MobileNetV2 (alpha 1.0, 224x224 grey, the cart-size case) and the 28x28 demo CNN,
   both fp32 and int8 (calibrated on real chest X-rays).
   The out-of-distribution guard is part of the demo models' graph: the raw call computes it too.
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
from paediatric import make_child

from medlite.convert.contract_writer import embed_contract
from medlite.convert.export import cart_model, convert
from medlite.convert.guard_graph import append_guard
from medlite.convert.pipeline import input_spec_of, outputs_of
from medlite.convert.variants import VARIANTS
from medlite.edge import Frame, load
from medlite.edge.ood import fit
from medlite.measure import datasets
from medlite.edge.contract import Contract, InputSpec, Preprocess
from medlite.edge.preprocess import prepare
from medlite.edge.readers import read
from medlite.train.models import build


def make_model(folder: Path, family: str, size: int, variant: str, calibration: np.ndarray, **options) -> Path:
    """Built as conversion builds it: scores (a float variant's softmax, an integer one's logits) and features
    as outputs (no guard: too few images here to fit one)."""
    built = build(family, input_shape=(size, size, 1), num_classes=2, **options)
    keras_model, activation, has_features, _ = cart_model(built, keep_softmax=VARIANTS[variant].float_activations)
    tfl = convert(keras_model, variant, calibration=calibration, n_calibration=len(calibration))
    scores_at, features_at, _ = outputs_of(tfl, 2, has_features)
    contract = Contract(input=input_spec_of(tfl), labels=("normal", "pneumonia"), positive_index=1, threshold=0.5,
                        preprocess=Preprocess(color="grey"), provenance={"variant": variant}, activation=activation,
                        scores_output=scores_at, features_output=features_at)
    path = folder / f"{family}_{size}_{variant}.tflite"
    path.write_bytes(embed_contract(tfl, contract))
    return path


def _interpreter(path: Path, threads: int | None = None):
    """A separate LiteRT interpreter of the file, its tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=path.read_bytes(), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def _raw(path: Path, threads: int | None, output: int):
    """A separate LiteRT interpreter, called as a user would: set the input, invoke, read the scores."""
    raw = _interpreter(path, threads)
    i_in, i_out = raw.get_input_details()[0]["index"], raw.get_output_details()[output]["index"]

    def call(x):
        raw.set_tensor(i_in, x)
        raw.invoke()
        return raw.get_tensor(i_out)

    return call


def _interleaved(calls: int, a, b) -> tuple[float, float]:
    """Medians (us) of ``a`` and ``b`` called alternately, alternating which goes first."""
    t_a, t_b, clock = np.empty(calls), np.empty(calls), time.perf_counter
    for k in range(calls):
        first, second = (a, b) if k % 2 == 0 else (b, a)
        t0 = clock()
        first()
        t1 = clock()
        second()
        t2 = clock()
        x, y = t1 - t0, t2 - t1
        t_a[k], t_b[k] = (x, y) if k % 2 == 0 else (y, x)
    return float(np.median(t_a)) * 1e6, float(np.median(t_b)) * 1e6


def overhead(path: Path, calls: int, threads: int | None, rounds: int = 5) -> dict:
    """medlite's classify against a separate raw interpreter on the same model, in ``rounds`` rounds of
    ``calls`` interleaved calls; two raw interpreters against each other give the noise floor of that
    comparison. Ratios are per round (median of its calls), reported as the median round and the range.

    Every round loads the three afresh: where an instance's buffers land in memory can move all of its calls
    by a few percent on a small model, so one pair of instances would measure that placement, not the code;
    the range over rounds shows how far it moves them."""
    ratios, noise, raw_us, medlite_us = [], [], [], []
    for _ in range(rounds):
        model = load(path, backend="cpu", threads=threads)
        spec = model.contract.input
        (frame,) = read(np.full((spec.height, spec.width), 128, np.uint8))
        x = model.prepare(frame)
        raw, raw2 = (_raw(path, threads, model.contract.scores_output) for _ in range(2))
        for _ in range(50):  # warm-up all three
            raw(x), raw2(x), model.classify(x)
        r, m = _interleaved(calls, lambda: raw(x), lambda: model.classify(x))
        r1, r2 = _interleaved(calls, lambda: raw(x), lambda: raw2(x))
        ratios.append(m / r), noise.append(r2 / r1), raw_us.append(r), medlite_us.append(m)
    what = "+".join(k for k, v in (("logits" if model.contract.activation == "softmax" else "probabilities", True),
                                   ("features", model.contract.features_output is not None),
                                   ("guard in the graph" if model.contract.ood.get("output") is not None
                                    else "guard", bool(model.contract.ood)),
                                   ("map (read only for a heatmap)", bool(model.contract.heatmap))) if v) or "scores"
    r, m = float(np.median(raw_us)), float(np.median(medlite_us))
    return {"model": path.name, "outputs": what, "raw_us": r, "medlite_us": m, "added_us": m - r,
            "ratio": float(np.median(ratios)), "ratio_range": (min(ratios), max(ratios)),
            "raw_vs_raw": float(np.median(noise)), "raw_vs_raw_range": (min(noise), max(noise))}


def guard_cost(path: Path, images: np.ndarray, calls: int, rounds: int) -> dict:
    """What the out-of-distribution guard costs inside the interpreter call: the model against a copy with a
    guard written into its graph as conversion writes it (fitted on the model's own features of real
    training images), two raw interpreters, interleaved, in rounds; medians in us."""
    model = load(path, backend="cpu")
    features = np.stack([model.classify(model.prepare(Frame(img[..., None].astype(np.float32))), features=True).features
                         for img in images])
    split = len(features) * 4 // 5
    blob, _ = append_guard(path.read_bytes(), model.contract.features_output, fit(features[:split], features[split:]))
    with_guard = path.with_name(path.stem + "_guarded.tflite")
    with_guard.write_bytes(blob)
    (frame,) = read(np.full((model.contract.input.height, model.contract.input.width), 128, np.uint8))
    x = model.prepare(frame)
    plain, guarded = _raw(path, None, model.contract.scores_output), _raw(with_guard, None, model.contract.scores_output)
    for _ in range(50):
        plain(x), guarded(x)
    rounds_us = [_interleaved(calls, lambda: plain(x), lambda: guarded(x)) for _ in range(rounds)]
    a, b = float(np.median([r[0] for r in rounds_us])), float(np.median([r[1] for r in rounds_us]))
    return {"model": path.name, "without_us": a, "with_us": b, "ratios": sorted(r[1] / r[0] for r in rounds_us)}


def folder_run(model_path: Path, dicom_dir: Path, copies: int) -> dict:
    """`medlite predict` on a folder, as a user runs it: a fresh process each time, pool against sequential."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "dicoms"
        folder.mkdir()
        for i in range(copies):
            for f in sorted(dicom_dir.glob("*.dcm")):
                shutil.copy(f, folder / f"{i:03d}_{f.name}")
                make_child(folder / f"{i:03d}_{f.name}")
        n = len(list(folder.iterdir()))
        times: dict[int, list[float]] = {0: [], 2: []}
        for workers in (0, 2, 0, 2):  # alternated, twice each
            out = Path(tmp) / f"out{workers}.jsonl"
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "medlite", "predict", str(model_path.resolve()), str(folder), "--quiet",
                            "--backend", "cpu", "--workers", str(workers), "--out", str(out)], check=True,
                           capture_output=True, cwd=tmp)
            times[workers].append(time.perf_counter() - t0)
            assert sum(1 for _ in out.open()) == n
    return {"files": n, "sequential_s": times[0], "pool_s": times[2], "speedup": sum(times[0]) / sum(times[2])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=os.environ.get("MEDLITE_DATA_DIR", "../shared/data"))
    ap.add_argument("--calls", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=9, help="rounds of --calls interleaved calls per model")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--models", nargs="*", type=Path, default=[],
                    help="medlite models to measure too, e.g. medlite-out/models/int8.tflite (logits, features, guard)")
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
        models += [make_model(tmp, "small_cnn", 28, v, cal28) for v in ("fp32", "int8")] + list(args.models)
        print(f"classify vs a separate raw interpreter (set_tensor/invoke/get_tensor of the scores): "
              f"{args.rounds} rounds of {args.calls} interleaved calls, interpreters loaded afresh each round, each "
              f"round's medians; the median round's "
              f"ratio and the range over rounds; threads={args.threads or 'default'}")
        print("| model | outputs | raw (us) | medlite (us) | added (us) | ratio | range | raw vs a second raw |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for m in models:
            r = overhead(m, args.calls, args.threads, args.rounds)
            print(f"| {r['model']} | {r['outputs']} | {r['raw_us']:.1f} | {r['medlite_us']:.1f} | "
                  f"{r['added_us']:+.1f} | {r['ratio']:.3f} | {r['ratio_range'][0]:.3f}-{r['ratio_range'][1]:.3f} | "
                  f"{r['raw_vs_raw']:.3f} ({r['raw_vs_raw_range'][0]:.3f}-{r['raw_vs_raw_range'][1]:.3f}) |",
                  flush=True)
        print("\nThe guard inside the graph: the same model's raw call without and with it (interleaved, "
              f"{args.rounds} rounds of {args.calls}; guard fitted on 1000 real training images' features)")
        print("| model | raw without (us) | raw with the guard (us) | the guard (us) | ratio (median round) | range |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        fit_images = datasets.load("pneumoniamnist", data_dir).splits["train"].images[:1000]
        for m in models[2:4]:
            g = guard_cost(m, fit_images, args.calls, args.rounds)
            r = g["ratios"]
            print(f"| {g['model']} | {g['without_us']:.1f} | {g['with_us']:.1f} | {g['with_us'] - g['without_us']:+.1f} "
                  f"| {r[len(r) // 2]:.3f} | {r[0]:.3f}-{r[-1]:.3f} |", flush=True)
        f = folder_run(models[-1], data_dir / "dicom", copies=50)
        seq = " / ".join(f"{t:.2f} s" for t in f["sequential_s"])
        pool = " / ".join(f"{t:.2f} s" for t in f["pool_s"])
        print(f"\n`medlite predict` on a folder of {f['files']} DICOMs (the 4 shared files x 50), int8 28x28 model, "
              f"whole command timed: --workers 0 (sequential) {seq}; --workers 2 (pool) {pool}; "
              f"speedup {f['speedup']:.2f}x")


if __name__ == "__main__":
    main()
