"""Validation of a converted variant through medlite.edge, the runtime the cart uses."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..edge.contract import Contract
from ..edge.decision import decide
from ..edge.metrics import choose_threshold, classification_metrics
from ..edge.preprocess import quantize
from ..edge.runtime import load


def infer_prepared(model_bytes: bytes, *inputs: np.ndarray | None, backend: str = "cpu",
                   workers: int | None = None) -> list[tuple[np.ndarray, np.ndarray | None] | None]:
    """(class probabilities, penultimate features or None) for each set of prepared float inputs
    (N x H x W x C), in one pass over each image.

    The images are shared among ``workers`` threads (default: the CPU count, at most 4), each with an
    interpreter of its own: LiteRT releases the GIL while it computes, so they run in parallel, and each
    image's result is what a single interpreter gives it.
    """
    workers = workers or min(4, os.cpu_count() or 1)
    sizes = [0 if x is None else len(x) for x in inputs]
    flat = [(k, i) for k, n in enumerate(sizes) for i in range(n)]
    chunks = [flat[w::workers] for w in range(workers)]

    def run(chunk):
        model = load(model_bytes, backend=backend, threads=1)
        spec = model.contract.input
        return [_scores_and_features(model.classify(quantize(inputs[k][i : i + 1], spec), features=True))
                for k, i in chunk]

    with ThreadPoolExecutor(workers) as pool:
        done = list(pool.map(run, chunks))
    results: list[list] = [[None] * n for n in sizes]
    for chunk, outs in zip(chunks, done):
        for (k, i), out in zip(chunk, outs):
            results[k][i] = out
    stacked: list[tuple[np.ndarray, np.ndarray | None] | None] = []
    for x, rows in zip(inputs, results):
        if x is None:
            stacked.append(None)
            continue
        features = None if rows and rows[0][1] is None else np.stack([f for _, f in rows])
        stacked.append((np.stack([p for p, _ in rows]), features))
    return stacked


def _scores_and_features(p) -> tuple[np.ndarray, np.ndarray | None]:
    return p.score_array, p.features


def compare(y: np.ndarray, probs: np.ndarray, ref_probs: np.ndarray, ref: Contract, policy: str, target: float,
            seed: int = 0, calibration: dict | None = None) -> tuple[float | None, dict]:
    """Re-choose this variant's threshold on ``y`` and measure it, with its own ``calibration`` (a multi-class
    model's, chosen on the same ``y``), against the reference's scores and contract.

    Returns (threshold, metrics) with auc, the rates at the threshold (a multi-class model's per class),
    agreement_with_fp32 and the mean and max absolute score difference.
    """
    pos = ref.positive_index
    threshold = None
    if pos is not None:
        threshold = choose_threshold(y == pos, probs[:, pos], policy, target)
    mine = ref.replace(threshold=threshold, calibration=calibration or {})
    metrics = classification_metrics(y, probs, pos, threshold, seed=seed, decided=decide(probs, mine))
    ref_metrics = classification_metrics(y, ref_probs, pos, ref.threshold, ci=False, decided=decide(ref_probs, ref))
    diff = np.abs(probs - ref_probs)
    metrics.update({
        "agreement_with_fp32": float((decide(probs, mine) == decide(ref_probs, ref)).mean()),
        "score_diff_mean": float(diff.mean()),
        "score_diff_max": float(diff.max()),
        "auc_change": float(metrics["auc"] - ref_metrics["auc"]),
    })
    return threshold, metrics
