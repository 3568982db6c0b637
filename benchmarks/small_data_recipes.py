"""Training recipes for small data, compared by cross-validation on training splits only (never a test split).

    python benchmarks/small_data_recipes.py --data-dir ../shared/data --busi-train busi-run/split/train [--folds 3]

Data sets: BUSI's training half (a class folder of breast ultrasound, benign / malignant / normal, 128 px;
``benchmarks/busi_localisation.py`` makes it and keeps the other half aside) and a 500-image sample of
PneumoniaMNIST's training split (28 px chest X-rays), so that a recipe is judged on two tasks of a few hundred
images each. Each data set's training images (its train and validation splits pooled) are cut into ``--folds``
stratified folds; every candidate trains on all folds but one and is scored on that one: the fold's AUC
(one-vs-rest macro for several classes) at the best epoch, and its balanced accuracy with the multi-class
calibration fitted on the same fold (optimistic alike for every candidate). Prints a table per data set:
mean and 95% t-interval over folds, and the time per fold.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from pathlib import Path

import numpy as np

from medlite.train.calibration import balanced_accuracy, decisions
from medlite.train.calibration import fit as fit_calibration
from medlite.train.config import load_config
from medlite.train.data import Arrays, load_training_data
from medlite.train.fit import auc_of, positive_index, train

STRONG = {"rotation_deg": 15.0, "shift": 0.12, "zoom": 0.2, "brightness": 0.15, "contrast": 0.25}
CANDIDATES = {
    "default (12 epochs)": {},
    "60 epochs": {"epochs": 60, "patience": 20},
    "60 epochs, strong augmentation": {"epochs": 60, "patience": 20, **STRONG},
    "60 epochs, strong augmentation, weight decay 1e-3": {"epochs": 60, "patience": 20, "weight_decay": 1e-3,
                                                          **STRONG},
    "60 epochs, strong augmentation, width 16": {"epochs": 60, "patience": 20, **STRONG,
                                                 "model_options": {"width": 16, "dense": 64, "dropout": 0.3}},
}


def folds(y: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """Stratified fold indices: each class's images dealt round-robin after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    out: list[list[int]] = [[] for _ in range(k)]
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        for i, j in enumerate(idx):
            out[i % k].append(int(j))
    return [np.sort(np.asarray(f)) for f in out]


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def cross_validate(data, overrides: dict, k: int) -> dict:
    pooled = [data.splits[s] for s in ("train", "val")]
    x, y = np.concatenate([a.x for a in pooled]), np.concatenate([a.y for a in pooled])
    config = load_config().updated(**overrides)
    n = len(data.label_names)
    aucs, bals, seconds = [], [], []
    for i, held in enumerate(folds(y, k)):
        keep = np.setdiff1d(np.arange(len(y)), held)
        fold = dataclasses.replace(data, splits={"train": Arrays(x[keep], y[keep]), "val": Arrays(x[held], y[held])})
        t0 = time.perf_counter()
        result = train(fold, config)
        seconds.append(time.perf_counter() - t0)
        p = result.model.predict(x[held], batch_size=256, verbose=0)
        pos = positive_index(fold, config)
        aucs.append(auc_of(y[held], p, pos))
        if n > 2:
            weights = fit_calibration("balanced", y[held], p, np.bincount(y[keep], minlength=n)).get("weights")
            bals.append(balanced_accuracy(y[held], decisions(p, weights), n))
        print(f"    fold {i + 1}/{k}: AUC {aucs[-1]:.3f}, best epoch {result.best_epoch}, {seconds[-1]:.0f} s",
              flush=True)
    return {"auc": interval(aucs), "balanced_accuracy": interval(bals) if bals else None,
            "seconds": float(np.mean(seconds))}


def pneumonia_sample(data_dir: Path, n: int = 500):
    """The first ``n`` images of PneumoniaMNIST's training split, as a data set of its own."""
    data = load_training_data("pneumoniamnist", data_dir=data_dir)
    tr = data.splits["train"]
    return dataclasses.replace(data, splits={"train": Arrays(tr.x[:n], tr.y[:n]),
                                             "val": Arrays(tr.x[:0], tr.y[:0])})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MEDLITE_DATA_DIR", "../shared/data")))
    ap.add_argument("--busi-train", type=Path, required=True, help="BUSI's training half (busi_localisation.py)")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="candidate names to run (default all)")
    args = ap.parse_args()
    sets = {"BUSI training half, 128 px": load_training_data(str(args.busi_train), image_size=128),
            "PneumoniaMNIST, 500 training images, 28 px": pneumonia_sample(args.data_dir)}
    for name, data in sets.items():
        n = sum(len(data.splits[s].y) for s in ("train", "val"))
        print(f"\n{name}: {n} images, {len(data.label_names)} classes, {args.folds}-fold cross-validation\n",
              flush=True)
        rows = []
        for cand, overrides in CANDIDATES.items():
            if args.only and cand not in args.only:
                continue
            print(f"  {cand}", flush=True)
            rows.append((cand, cross_validate(data, overrides, args.folds)))
        print("\n| recipe | AUC (mean, 95% CI) | balanced accuracy, calibrated (mean, 95% CI) | s per fold |")
        print("| --- | --- | --- | ---: |")
        for cand, r in rows:
            bal = "-" if r["balanced_accuracy"] is None else \
                f"{r['balanced_accuracy'][0]:.3f} ± {r['balanced_accuracy'][1]:.3f}"
            print(f"| {cand} | {r['auc'][0]:.3f} ± {r['auc'][1]:.3f} | {bal} | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
