"""Validation of a converted variant through medlite.edge, the runtime the cart uses."""

from __future__ import annotations

import numpy as np

from medlite.edge.metrics import choose_threshold, classification_metrics, decisions
from medlite.edge.preprocess import quantize
from medlite.edge.runtime import load


def predict_prepared(path: str, *inputs: np.ndarray | None, backend: str = "cpu") -> list[np.ndarray | None]:
    """Class probabilities for each set of prepared float inputs (N x H x W x C), one model load for all."""
    model = load(path, backend=backend)
    spec = model.contract.input
    return [None if x is None else np.stack([model.run(quantize(x[i : i + 1], spec))[0] for i in range(len(x))])
            for x in inputs]


def compare(y: np.ndarray, probs: np.ndarray, ref_probs: np.ndarray, ref_threshold: float | None,
            pos: int | None, policy: str, target: float, seed: int = 0) -> tuple[float | None, dict]:
    """Re-choose this variant's threshold on ``y`` and measure it against the fp32 reference.

    Returns (threshold, metrics) with auc, the rates at the threshold, agreement_with_fp32 and the
    mean and max absolute score difference.
    """
    threshold = None
    if pos is not None:
        threshold = choose_threshold(y == pos, probs[:, pos], policy, target)
    metrics = classification_metrics(y, probs, pos, threshold, seed=seed)
    ref = classification_metrics(y, ref_probs, pos, ref_threshold, ci=False)
    diff = np.abs(probs - ref_probs)
    metrics.update({
        "agreement_with_fp32": float((decisions(probs, pos, threshold) == decisions(ref_probs, pos, ref_threshold))
                                     .mean()),
        "score_diff_mean": float(diff.mean()),
        "score_diff_max": float(diff.max()),
        "auc_change": float(metrics["auc"] - ref["auc"]),
    })
    return threshold, metrics
