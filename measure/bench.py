"""Measuring models on this device through medlite.edge: load, latency percentiles, memory, accuracy.

Latency is timed in one process with every model loaded, in rounds that
interleave the models, so slow drifts of a shared machine hit every variant
alike. Accuracy and peak resident memory come from a fresh child process per
row, so one model's memory is not counted against another.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import resource
import sys
import time

import numpy as np

from ..edge import backends
from ..edge.backends.session import Options
from ..edge.decision import decide
from ..edge.errors import BackendUnavailable
from ..edge.frames import Frame
from ..edge.metrics import classification_metrics
from ..edge.runtime import Model, load
from .datasets import Split

ROUNDS = 10  # latency runs are split into this many interleaved rounds
WARMUP = 20
HEATMAP_RUNS = 100  # prediction pairs, with and without the heatmap, timed per model


def frame_of(img: np.ndarray) -> Frame:
    return Frame(img.astype(np.float32)[..., None] if img.ndim == 2 else img.astype(np.float32))


def split_probs(model: Model, split: Split) -> np.ndarray:
    """Class probabilities for every image of a labelled split, through the cart's own path."""
    out = np.empty((len(split.images), len(model.contract.labels)), dtype=np.float32)
    for i, img in enumerate(split.images):
        out[i] = model.classify(model.prepare(frame_of(img))).score_array
    return out


def _peak_rss_mb() -> float:
    """This process's peak resident memory. On Linux, VmHWM: ru_maxrss survives exec, so a child started by
    fork and exec would report its parent's peak (TensorFlow's, when a workstation benches)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / 1024 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB elsewhere


def _accuracy_job(path: str, backend: str, threads: int | None, images: np.ndarray, labels: np.ndarray, seed: int):
    """Runs in a child process: load, first inference, the whole split; with this process's peak memory.

    A backend that turns out unable to run this model (an Edge TPU without a build of it) gives its reason."""
    t0 = time.perf_counter()
    try:
        model = load(path, backend=backend, threads=threads)
    except BackendUnavailable as e:
        return {"unavailable": e.reason}
    load_ms = (time.perf_counter() - t0) * 1e3
    x = model.prepare(frame_of(images[0]))
    t0 = time.perf_counter()
    model.classify(x)
    first_ms = (time.perf_counter() - t0) * 1e3
    split = Split(images, labels)
    probs = split_probs(model, split)
    c = model.contract
    metrics, decisions = accuracy_of(c, labels, probs, seed)
    return {"load_ms": load_ms, "first_inference_ms": first_ms, "metrics": metrics,
            "decisions": decisions, "peak_rss_mb": _peak_rss_mb(), "backend": model.backend,
            "variant": c.provenance.get("variant", "unknown"), "size_bytes": model.size_bytes,
            "labels": list(c.labels),
            "attempts": [{"backend": a.backend, "ok": a.ok, "reason": a.reason} for a in model.attempts]}


def accuracy_of(contract, labels: np.ndarray, probs: np.ndarray, seed: int = 0) -> tuple[dict, np.ndarray]:
    """A split's metrics (AUC with its interval, sensitivity and specificity at the contract's operating point,
    ...) from a model's scores, and its decisions; ``medlite bench`` on one device and on a Ray cluster alike."""
    decisions = decide(probs, contract)
    return classification_metrics(labels, probs, contract.positive_index, contract.threshold, seed=seed,
                                  decided=decisions), decisions


def agreement_with_fp32(rows: list[dict]) -> None:
    """Each row's share of decisions equal to fp32's (the same backend and threads where there are several),
    into its metrics; rows give their decisions as ``_decisions``, which this takes out."""
    refs = {(r["backend"], r["threads"]): r["_decisions"] for r in rows if r["variant"] == "fp32"}
    any_ref = next(iter(refs.values()), None)
    for r in rows:
        ref = refs.get((r["backend"], r["threads"]), any_ref)
        d = r.pop("_decisions")
        r["metrics"]["agreement_with_fp32"] = None if ref is None else float((d == ref).mean())


def backends_for(path: str, wanted: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """The backends that may run ``path`` here (from ``wanted``, default all) and why the others cannot."""
    usable, skipped = [], {}
    for b in backends.CHAIN:
        if wanted and b.NAME not in wanted:
            continue
        ok, reason = b.is_available(Options(path=path))
        (usable.append(b.NAME) if ok else skipped.__setitem__(b.NAME, reason))
    return usable, skipped


def latency_rounds(models: list[Model], inputs: list[np.ndarray], runs: int) -> list[np.ndarray]:
    """Per-model call times in ms: warm-up, then ``runs`` calls each, interleaved over ROUNDS rounds."""
    for m, x in zip(models, inputs):
        for _ in range(WARMUP):
            m.classify(x)
    times = [np.empty(runs) for _ in models]
    per_round = int(np.ceil(runs / ROUNDS))
    done = 0
    while done < runs:
        n = min(per_round, runs - done)
        for m, x, t in zip(models, inputs, times):
            for k in range(done, done + n):
                t0 = time.perf_counter()
                m.classify(x)
                t[k] = time.perf_counter() - t0
        done += n
    return [t * 1e3 for t in times]


def heatmap_cost(model: Model, frame: Frame, x: np.ndarray, runs: int) -> dict:
    """A prediction's p50 in ms without and with its heatmap (map, peak, box at the image's size), alternated."""
    without, with_map = np.empty(runs), np.empty(runs)
    for _ in range(WARMUP):
        model.predict_frame(frame, heatmap=True, x=x)
    for k in range(runs):
        t0 = time.perf_counter()
        model.predict_frame(frame, x=x)
        t1 = time.perf_counter()
        model.predict_frame(frame, heatmap=True, x=x)
        without[k], with_map[k] = t1 - t0, time.perf_counter() - t1
    a, b = float(np.median(without) * 1e3), float(np.median(with_map) * 1e3)
    return {"without_p50": a, "with_p50": b, "added_p50": b - a, "image": list(frame.image_size)}


GALLERY_CASES = 3  # correct and wrong cases each


def gallery(rows: list[dict], split: Split, seed: int = 0) -> list[dict]:
    """A few test images with the fp32 and int8 heatmaps side by side (PNG overlays, base64): correct and
    wrong decisions of fp32, drawn at random with a fixed seed. Empty when either model has no heatmap."""
    import base64

    import cv2

    from ..edge.heatmap import overlay

    paths = {r["variant"]: r["model"] for r in rows if r["backend"] == "cpu"}
    if not {"fp32", "int8"} <= set(paths):
        return []
    models = {v: load(paths[v], backend="cpu") for v in ("fp32", "int8")}
    if not all(m.has_heatmap for m in models.values()):
        return []
    labels = models["fp32"].contract.labels
    rng = np.random.default_rng(seed)
    picked = {True: [], False: []}
    for i in rng.permutation(len(split.images)):
        p = models["fp32"].predict_frame(frame_of(split.images[i]))
        correct = p.label == labels[int(split.labels[i])]
        if len(picked[correct]) < GALLERY_CASES:
            picked[correct].append(int(i))
        if all(len(v) == GALLERY_CASES for v in picked.values()):
            break
    cases = []
    for correct, indices in ((True, picked[True]), (False, picked[False])):
        for i in indices:
            frame = frame_of(split.images[i])
            case = {"index": i, "truth": labels[int(split.labels[i])], "fp32_correct": correct}
            for v, m in models.items():
                p = m.predict_frame(frame, heatmap=True)
                picture = overlay(frame.pixels, p.heatmap)
                side = max(picture.shape[:2])
                if side < 160:  # small MedMNIST images: enlarged so that a person can see them
                    scale = 160 / side
                    picture = cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
                ok, png = cv2.imencode(".png", picture)
                case[v] = {"label": p.label, "score": p.score, "threshold": p.threshold,
                           "positive": m.contract.positive_label, "peak": list(p.peak),
                           "png": base64.b64encode(png.tobytes()).decode("ascii")}
            cases.append(case)
    return cases


def summarize(t: np.ndarray) -> dict:
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(t.mean()), "std": float(t.std()),
            "min": float(t.min()), "runs": int(len(t))}


def bench(paths: list[str], split: Split, *, backend_names: list[str] | None = None,
          threads_list: list[int | None] = (None,), runs: int = 200, seed: int = 0, progress=None) -> tuple[list, dict]:
    """Report rows for every model x usable backend x thread count, and the backends that were skipped.

    A thread count of None means one thread.
    """
    if runs < 1:
        raise ValueError("runs must be at least 1")
    # An explicit count, so every row says what it ran with. One thread by default: on a small shared
    # machine a second XNNPACK thread competes with everything else, and repeated runs then disagree by
    # tens of percent (benchmarks/RESULTS.md); ask for more with threads_list.
    threads_list = [t or 1 for t in threads_list]
    combos, skipped = [], {}
    for p in paths:
        usable, why = backends_for(p, backend_names)
        skipped.update(why)
        combos += [(p, b, t) for b in usable for t in threads_list]
    rows = []
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx, max_tasks_per_child=1) as pool:
        for p, b, t in combos:
            if progress:
                progress(f"accuracy and memory: {p} on {b}, threads {t or 'default'}")
            r = pool.submit(_accuracy_job, p, b, t, split.images, split.labels, seed).result()
            if "unavailable" in r:
                skipped[b] = r["unavailable"]
                continue
            rows.append({"variant": r["variant"], "backend": r["backend"], "threads": t, "model": str(p),
                         "size_bytes": r["size_bytes"], "load_ms": r["load_ms"],
                         "first_inference_ms": r["first_inference_ms"], "peak_rss_mb": r["peak_rss_mb"],
                         "metrics": r["metrics"], "labels": r["labels"], "attempts": r["attempts"],
                         "_decisions": r["decisions"]})
    for t in threads_list:  # latency: one process, all models of a thread count interleaved
        group = [r for r in rows if r["threads"] == t]
        if not group:
            continue
        if progress:
            progress(f"latency: {len(group)} model(s), threads {t or 'default'}, {runs} runs each, interleaved")
        models = [load(r["model"], backend=r["backend"], threads=t) for r in group]
        inputs = [m.prepare(frame_of(split.images[0])) for m in models]
        for r, times in zip(group, latency_rounds(models, inputs, runs)):
            r["latency_ms"] = summarize(times)
            r["throughput_per_s"] = 1e3 / r["latency_ms"]["mean"]
        frame = frame_of(split.images[0])
        for r, m, x in zip(group, models, inputs):
            if m.has_heatmap:  # a median of a hundred pairs is steady; the slowest variants cost 16 ms a call
                r["heatmap_ms"] = heatmap_cost(m, frame, x, min(runs, HEATMAP_RUNS))
    agreement_with_fp32(rows)
    return rows, skipped
