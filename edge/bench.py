"""Measuring a model on this device through medlite.edge: load time, latency percentiles, accuracy."""

from __future__ import annotations

import time

import numpy as np

from medlite.edge.datasets import Split
from medlite.edge.frames import Frame
from medlite.edge.metrics import classification_metrics
from medlite.edge.runtime import Model, load


def latency(model: Model, x: np.ndarray, runs: int = 200, warmup: int = 20) -> dict:
    """Percentiles of ``model.run`` on one prepared input, in ms, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        model.run(x)
    t = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        model.run(x)
        t[i] = time.perf_counter() - t0
    t *= 1e3
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(t.mean()), "std": float(t.std()),
            "runs": runs}


def split_probs(model: Model, split: Split) -> np.ndarray:
    """Class probabilities for every image of a labelled split, through the cart's own path."""
    out = np.empty((len(split.images), len(model.contract.labels)), dtype=np.float32)
    for i, img in enumerate(split.images):
        out[i] = model.run(model.prepare(Frame(img.astype(np.float32)[..., None] if img.ndim == 2 else
                                               img.astype(np.float32))))[0]
    return out


def decisions(model: Model, probs: np.ndarray) -> np.ndarray:
    c = model.contract
    if c.positive_index is not None and c.threshold is not None:
        return (probs[:, c.positive_index] >= c.threshold).astype(int)
    return probs.argmax(1)


def bench_model(path: str, split: Split, *, backend: str = "cpu", threads: int | None = None, runs: int = 200,
                seed: int = 0) -> tuple[dict, np.ndarray]:
    """One report row for ``path`` on ``backend``, and its decisions on the split (for agreement)."""
    t0 = time.perf_counter()
    model = load(path, backend=backend, threads=threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    x = model.prepare(Frame(split.images[0].astype(np.float32)[..., None] if split.images.ndim == 3
                            else split.images[0].astype(np.float32)))
    t0 = time.perf_counter()
    model.run(x)
    first_ms = (time.perf_counter() - t0) * 1e3
    lat = latency(model, x, runs=runs)
    probs = split_probs(model, split)
    c = model.contract
    metrics = classification_metrics(split.labels, probs, c.positive_index, c.threshold, seed=seed)
    row = {
        "variant": c.provenance.get("variant", "unknown"),
        "backend": model.backend,
        "threads": threads,
        "model": str(path),
        "size_bytes": model.size_bytes,
        "load_ms": load_ms,
        "first_inference_ms": first_ms,
        "latency_ms": lat,
        "throughput_per_s": 1e3 / lat["mean"],
        "metrics": metrics,
        "attempts": [{"backend": a.backend, "ok": a.ok, "reason": a.reason} for a in model.attempts],
    }
    return row, decisions(model, probs)


def bench(paths: list[str], split: Split, *, backend: str = "cpu", threads: int | None = None, runs: int = 200,
          progress=None) -> list[dict]:
    """Rows for several variants; agreement is measured against the fp32 row's decisions."""
    rows, decided = [], {}
    for p in paths:
        if progress:
            progress(p)
        row, d = bench_model(p, split, backend=backend, threads=threads, runs=runs)
        rows.append(row)
        decided[row["variant"]] = d
    ref = decided.get("fp32")
    for row in rows:
        agree = None if ref is None else float((decided[row["variant"]] == ref).mean())
        row["metrics"]["agreement_with_fp32"] = agree
    return rows
