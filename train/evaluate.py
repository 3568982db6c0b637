"""The operating point and the metrics of a trained model, on validation and test."""

from __future__ import annotations

import numpy as np

from ..edge.metrics import choose_threshold, classification_metrics
from .calibration import decisions
from .calibration import fit as fit_calibration
from .config import TrainConfig


def operating_point_name(config: TrainConfig) -> str:
    if config.operating_point == "sensitivity":
        return f"sensitivity>={config.target_sensitivity:g} on validation"
    return "youden on validation"


def evaluate(val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray] | None,
             pos: int | None, config: TrainConfig, train_counts: np.ndarray, seed: int = 0
             ) -> tuple[float | None, dict, dict]:
    """Choose the decision on validation ``(y, probs)``: a binary model's threshold, a multi-class model's
    calibration (``train_counts``: the training split's images per class); then report it on validation and
    test. Returns (threshold or None, calibration or {}, ``{"validation": {...}, "test": {...}}``)."""
    yv, pv = val
    threshold, calibration = None, {}
    if pos is not None:
        threshold = choose_threshold(yv == pos, pv[:, pos], config.operating_point, config.target_sensitivity)
    else:
        calibration = fit_calibration(config.calibration, yv, pv, train_counts)
    weights = calibration.get("weights")
    metrics = {"validation": classification_metrics(yv, pv, pos, threshold, seed=seed,
                                                    decided=decisions(pv, weights))}
    if test is not None:
        metrics["test"] = classification_metrics(test[0], test[1], pos, threshold, seed=seed,
                                                 decided=decisions(test[1], weights))
    return threshold, calibration, metrics
