"""Diagnostic metrics and operating points in NumPy alone.

These run on the cart (``medlite bench``), which has no scikit-learn; the tests
check every function against scikit-learn on real predictions.
"""

from __future__ import annotations

import math

import numpy as np


def _average_ranks(x: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def roc_auc(y_true, score) -> float:
    """Area under the ROC curve of a binary task (ties count one half), by the rank-sum identity."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def ovr_auc(y_true, probs) -> float:
    """Macro one-vs-rest AUC of a multi-class task."""
    y = np.asarray(y_true)
    p = np.asarray(probs)
    aucs = [roc_auc(y == k, p[:, k]) for k in range(p.shape[1]) if 0 < (y == k).sum() < len(y)]
    return float(np.mean(aucs)) if aucs else float("nan")


def at_threshold(y_true, score, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity, accuracy and balanced accuracy when score >= threshold is positive."""
    y = np.asarray(y_true).astype(bool)
    pred = np.asarray(score) >= threshold
    tp, tn = int((pred & y).sum()), int((~pred & ~y).sum())
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    sens = tp / n_pos if n_pos else float("nan")
    spec = tn / n_neg if n_neg else float("nan")
    return {"sensitivity": sens, "specificity": spec, "accuracy": (tp + tn) / len(y),
            "balanced_accuracy": (sens + spec) / 2}


def threshold_for_sensitivity(y_true, score, target: float) -> float:
    """The highest threshold whose sensitivity is at least ``target`` (fewest false positives)."""
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    pos = np.sort(np.asarray(score, dtype=np.float64)[np.asarray(y_true).astype(bool)])[::-1]
    if len(pos) == 0:
        raise ValueError("no positive cases to set a sensitivity threshold on")
    k = math.ceil(target * len(pos) - 1e-9)
    return float(pos[k - 1])


def threshold_youden(y_true, score) -> float:
    """The threshold that maximises Youden's J = sensitivity + specificity - 1 (highest on ties)."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("Youden's J needs both classes")
    candidates = np.unique(s)[::-1]
    sens = 1 - np.searchsorted(pos, candidates, side="left") / len(pos)
    spec = np.searchsorted(neg, candidates, side="left") / len(neg)
    return float(candidates[int(np.argmax(sens + spec))])


def choose_threshold(y_true, score, policy: str = "sensitivity", target: float = 0.95) -> float:
    if policy == "sensitivity":
        return threshold_for_sensitivity(y_true, score, target)
    if policy == "youden":
        return threshold_youden(y_true, score)
    raise ValueError(f"operating point policy {policy!r} is not 'sensitivity' or 'youden'")


def bootstrap_auc_ci(y_true, score, n: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUC, resampling cases with replacement."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        a = roc_auc(y[i], s[i])
        if not math.isnan(a):
            aucs.append(a)
    lo, hi = np.percentile(aucs, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def per_class(y_true, decided, n_classes: int) -> dict:
    """Accuracy, balanced accuracy, each class's sensitivity and specificity (one against the rest) and the
    confusion matrix (rows: the truth, columns: the decision) of a split's decisions."""
    y, d = np.asarray(y_true), np.asarray(decided)
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(confusion, (y, d), 1)
    rates = []
    for k in range(n_classes):
        is_k, said_k = y == k, d == k
        rates.append({"sensitivity": float((said_k & is_k).sum() / is_k.sum()) if is_k.any() else None,
                      "specificity": float((~said_k & ~is_k).sum() / (~is_k).sum()) if (~is_k).any() else None})
    sens = [r["sensitivity"] for r in rates if r["sensitivity"] is not None]
    return {"accuracy": float((d == y).mean()), "balanced_accuracy": float(np.mean(sens)) if sens else float("nan"),
            "per_class": rates, "confusion": confusion.tolist()}


def classification_metrics(y_true, probs, positive_index: int | None, threshold: float | None,
                           ci: bool = True, seed: int = 0, decided=None) -> dict:
    """The metric set medlite reports for one model on one labelled split. A multi-class model's decisions
    are ``decided`` (``edge.decide`` with its contract's calibration), else the plain argmax."""
    y = np.asarray(y_true)
    p = np.asarray(probs)
    out: dict = {"n": int(len(y))}
    if positive_index is not None and p.shape[1] == 2:
        pos = y == positive_index
        score = p[:, positive_index]
        out["auc"] = roc_auc(pos, score)
        if ci:
            out["auc_ci95"] = list(bootstrap_auc_ci(pos, score, seed=seed))
        if threshold is not None:
            out.update(at_threshold(pos, score, threshold))
            out["threshold"] = float(threshold)
            decisions = np.where(score >= threshold, positive_index, 1 - positive_index)
            out["confusion"] = per_class(y, decisions, 2)["confusion"]
    else:
        out["auc"] = ovr_auc(y, p)
        out["auc_per_class"] = [roc_auc(y == k, p[:, k]) for k in range(p.shape[1])]
        out.update(per_class(y, p.argmax(1) if decided is None else decided, p.shape[1]))
    return out
