"""Validation of a converted variant through medlite.edge, the runtime the cart uses."""

from __future__ import annotations

import numpy as np

from ..edge.contract import Contract
from ..edge.decision import decide
from ..edge.metrics import choose_threshold, classification_metrics
from ..edge.preprocess import quantize
from ..edge.runtime import load


def predict_prepared(model_bytes: bytes, *inputs: np.ndarray | None, backend: str = "cpu") -> list[np.ndarray | None]:
    """Class probabilities for each set of prepared float inputs (N x H x W x C), one model load for all."""
    model = load(model_bytes, backend=backend)
    spec = model.contract.input
    return [None if x is None else np.stack([model.run(quantize(x[i : i + 1], spec))[0] for i in range(len(x))])
            for x in inputs]


def features_prepared(model_bytes: bytes, *inputs: np.ndarray, backend: str = "cpu") -> list[np.ndarray]:
    """The model's own penultimate features (dequantized) for each set of prepared float inputs."""
    model = load(model_bytes, backend=backend)
    spec = model.contract.input
    return [np.stack([model.infer(quantize(x[i : i + 1], spec))[1] for i in range(len(x))]) for x in inputs]


def compare(y: np.ndarray, probs: np.ndarray, ref_probs: np.ndarray, ref: Contract, policy: str, target: float,
            seed: int = 0) -> tuple[float | None, dict]:
    """Re-choose this variant's threshold on ``y`` and measure it against the reference's scores and contract.

    Returns (threshold, metrics) with auc, the rates at the threshold, agreement_with_fp32 and the
    mean and max absolute score difference.
    """
    pos = ref.positive_index
    threshold = None
    if pos is not None:
        threshold = choose_threshold(y == pos, probs[:, pos], policy, target)
    metrics = classification_metrics(y, probs, pos, threshold, seed=seed)
    ref_metrics = classification_metrics(y, ref_probs, pos, ref.threshold, ci=False)
    diff = np.abs(probs - ref_probs)
    metrics.update({
        "agreement_with_fp32": float((decide(probs, ref.replace(threshold=threshold)) == decide(ref_probs, ref))
                                     .mean()),
        "score_diff_mean": float(diff.mean()),
        "score_diff_max": float(diff.max()),
        "auc_change": float(metrics["auc"] - ref_metrics["auc"]),
    })
    return threshold, metrics
