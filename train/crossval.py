"""An honest estimate from few images: K-fold cross-validation of a recipe on the training images (the train
and validation splits pooled; a test split is never touched), the AUC's mean with a 95% t-interval."""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time

import numpy as np

from .config import TrainConfig
from .data import Arrays, TrainingData, stratified_split
from .fit import auc_of, positive_index, train
from .pretrain import encoder_for


def folds(y: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """Stratified fold indices: each class's images dealt round-robin after a seeded shuffle."""
    if not 2 <= k <= np.bincount(y).min():
        raise ValueError(f"{k} folds need 2 to {np.bincount(y).min()} (the smallest class's images)")
    rng = np.random.default_rng(seed)
    out: list[list[int]] = [[] for _ in range(k)]
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        for i, j in enumerate(idx):
            out[i % k].append(int(j))
    return [np.sort(np.asarray(f)) for f in out]


def interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its 95% t-interval over folds."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def cross_validate(data: TrainingData, config: TrainConfig, k: int, progress=None, init=None,
                   teach: np.ndarray | None = None, inner_val: bool = False) -> dict:
    """Train ``config`` on all folds but one, K times, and score each held-out fold at its best epoch (early
    stopping watches that fold, as it watches validation in a plain run, which flatters the estimate). With
    ``inner_val``, each fold's training images give up ``config.val_fraction`` of themselves as the validation
    that picks the epoch, as ``medlite train`` does, and the held-out fold is only scored: the honest estimate
    of a recipe that keeps its best epoch. ``progress(fold, k, auc)`` after each.
    Returns {"folds", "auc": {"mean", "ci95", "per_fold"}, "best_epochs", "seconds"}; also ``"probs"`` and ``"y"``,
    every image's held-out scores in pooled order. Every fold starts from the encoder ``init``; with none and a
    recipe that pretrains, from one encoder pretrained on all the training images (their labels unused). With
    ``teach`` (images), also ``"ensemble"``: the folds' models' mean scores of those images, a teacher to distil."""
    pooled = Arrays.joined([data.splits[s] for s in ("train", "val") if s in data.splits])
    x, y = pooled.x, pooled.y
    pos = positive_index(data, config)
    aucs, epochs, probs, t0 = [], [], np.zeros((len(y), len(data.label_names)), np.float32), time.perf_counter()
    ensemble = 0.0
    with tempfile.TemporaryDirectory(prefix="medlite-encoder-") as tmp:
        if init is None and config.pretrain != "none":
            init = encoder_for(x, config, tmp)
        for i, held in enumerate(folds(y, k, config.seed)):
            keep = np.setdiff1d(np.arange(len(y)), held)
            val = held
            if inner_val:
                inner, picked = stratified_split(y[keep], config.val_fraction, config.seed)
                keep, val = keep[inner], keep[picked]
            fold = dataclasses.replace(data, splits={"train": pooled.take(keep), "val": pooled.take(val)})
            result = train(fold, config, init=init)
            probs[held] = result.model.predict(x[held], batch_size=256, verbose=0)
            if teach is not None:
                ensemble = ensemble + result.model.predict(teach, batch_size=256, verbose=0) / k
            aucs.append(auc_of(y[held], probs[held], pos))
            epochs.append(result.best_epoch)
            if progress:
                progress(i + 1, k, aucs[-1])
    mean, lo, hi = interval(aucs)
    out = {"folds": k, "auc": {"mean": mean, "ci95": [lo, hi], "per_fold": aucs}, "best_epochs": epochs,
           "seconds": round(time.perf_counter() - t0, 1), "probs": probs, "y": y}
    return out if teach is None else {**out, "ensemble": ensemble}
