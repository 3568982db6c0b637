"""The decision of a multi-class model, calibrated on validation: one weight per class, and the decided class is
the one whose score times its weight is highest (``edge.decide``).

Why: training weighs classes by inverse frequency, so that a rare class is learnt at all; the scores then
over-state the rare class, and the plain argmax answers it too often (BUSI's "normal": 46 of 84 answers,
including 37 of the 72 lesions). The scores still rank well (the AUC), so the fix belongs to the decision.

Methods (the recipe's ``calibration``):
- ``none``: the plain argmax.
- ``prior``: the Bayes correction for the class weighting: each class's weight is its share of the training
  split, which undoes the balancing and aims at accuracy on data with the training split's mix.
- ``balanced``: weights chosen on validation for the highest balanced accuracy (the mean of the classes'
  sensitivities), by coordinate search over a grid of log-weights, from the better of the plain argmax and
  ``prior``, and moved only where that gains.
"""

from __future__ import annotations

import numpy as np

METHODS = ("none", "prior", "balanced")
GRID = np.linspace(-2.5, 2.5, 51)  # log-weights searched for "balanced", relative to the first class
PASSES = 3


def decisions(probs: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """Each row's class: the highest score times its weight (float64 products, as ``edge.decide`` takes them)."""
    p = np.asarray(probs, dtype=np.float32).astype(np.float64)
    return (p if weights is None else p * np.asarray(weights, dtype=np.float64)).argmax(1)


def balanced_accuracy(y: np.ndarray, decided: np.ndarray, n_classes: int) -> float:
    recalls = [float((decided[y == k] == k).mean()) for k in range(n_classes) if (y == k).any()]
    return float(np.mean(recalls)) if recalls else float("nan")


def fit(method: str, y_val: np.ndarray, p_val: np.ndarray, train_counts: np.ndarray) -> dict:
    """The contract's ``calibration`` for ``method``: {"method", "weights"} ({} for "none")."""
    if method not in METHODS:
        raise ValueError(f"calibration must be one of {', '.join(METHODS)}, got {method!r}")
    n = p_val.shape[1]
    if method == "none" or n < 3:
        return {}
    prior = np.asarray(train_counts, dtype=np.float64) / max(1, int(np.sum(train_counts)))
    weights = prior / prior[0]
    if method == "balanced":
        start = max((np.ones(n), weights), key=lambda w: balanced_accuracy(y_val, decisions(p_val, w), n))
        weights = _search(y_val, p_val, start)
    return {"method": method, "weights": [float(w) for w in weights]}


def _search(y: np.ndarray, p: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Coordinate ascent on balanced accuracy over GRID (log-weights of classes 1..n-1 against class 0); among
    equal scores the smallest change from ``start`` wins, so a tie never moves a weight."""
    n = p.shape[1]
    logw = np.log(start)
    best = balanced_accuracy(y, decisions(p, np.exp(logw)), n)
    for _ in range(PASSES):
        moved = False
        for k in range(1, n):
            candidates = sorted(GRID + 0.0, key=lambda g: abs(g - logw[k]))  # nearest first: ties keep the old
            for g in candidates:
                trial = logw.copy()
                trial[k] = g
                score = balanced_accuracy(y, decisions(p, np.exp(trial)), n)
                if score > best + 1e-12:
                    best, logw, moved = score, trial, True
        if not moved:
            break
    return np.exp(logw)
