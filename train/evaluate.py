"""The operating point and the metrics of a trained model, on validation and test."""

from __future__ import annotations

import numpy as np

from ..edge.metrics import choose_threshold, classification_metrics
from .config import TrainConfig


def operating_point_name(config: TrainConfig) -> str:
    if config.operating_point == "sensitivity":
        return f"sensitivity>={config.target_sensitivity:g} on validation"
    return "youden on validation"


def evaluate(val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray] | None,
             pos: int | None, config: TrainConfig, seed: int = 0) -> tuple[float | None, dict]:
    """Choose the threshold on validation ``(y, probs)``, then report it on validation and test.

    Returns the threshold (None for multi-class) and ``{"validation": {...}, "test": {...}}``.
    """
    yv, pv = val
    threshold = None
    if pos is not None:
        threshold = choose_threshold(yv == pos, pv[:, pos], config.operating_point, config.target_sensitivity)
    metrics = {"validation": classification_metrics(yv, pv, pos, threshold, seed=seed)}
    if test is not None:
        metrics["test"] = classification_metrics(test[0], test[1], pos, threshold, seed=seed)
    return threshold, metrics
