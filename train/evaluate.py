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
             pos: int | None, config: TrainConfig, train_counts: np.ndarray, seed: int = 0,
             held_out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[float | None, dict, dict]:
    """Choose the decision on validation ``(y, probs)``: a binary model's threshold, a multi-class model's
    calibration (``train_counts``: the training split's images per class), fitted on ``held_out`` scores
    instead where given (cross-validation's, every training image scored by a model that did not see it: a
    few hundred images where validation has a few dozen); then report it on validation and test. Returns
    (threshold or None, calibration or {}, ``{"validation": {...}, "test": {...}}``)."""
    yv, pv = val
    threshold, calibration = None, {}
    if pos is not None:
        threshold = choose_threshold(yv == pos, pv[:, pos], config.operating_point, config.target_sensitivity)
    else:
        yc, pc = held_out or val
        calibration = fit_calibration(config.calibration, yc, pc, train_counts)
        if calibration and held_out is not None:
            calibration["fitted_on"] = f"cross-validation scores of {len(yc)} training images"
    weights = calibration.get("weights")
    metrics = {"validation": classification_metrics(yv, pv, pos, threshold, seed=seed,
                                                    decided=decisions(pv, weights))}
    if test is not None:
        metrics["test"] = classification_metrics(test[0], test[1], pos, threshold, seed=seed,
                                                 decided=decisions(test[1], weights))
    return threshold, calibration, metrics
