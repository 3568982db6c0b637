"""Training recipes for small data, compared by cross-validation on training splits only (never a test split).

    python benchmarks/small_data_recipes.py --data-dir ../shared/data --busi-train busi-run/split/train [--folds 3]
        [--busi-masks ../shared/data/busi/masks] [--busi-size 128] [--crop center]

Data sets: BUSI's training half (a class folder of breast ultrasound, benign / malignant / normal, 128 px;
``benchmarks/busi_localisation.py`` makes it and keeps the other half aside) and a 500-image sample of
PneumoniaMNIST's training split (28 px chest X-rays), so that a recipe is judged on two tasks of a few hundred
images each. Each data set's training images (its train and validation splits pooled) are cut into ``--folds``
stratified folds; every candidate trains on all folds but one and is scored on that one: the fold's AUC
(one-vs-rest macro for several classes) at the epoch its recipe keeps (the last; or the best, picked by the
held-out fold itself, which flatters it, unless the candidate picks it on a tenth of its own training images
as ``medlite train`` does), its balanced accuracy with the multi-class calibration fitted on the same fold
(optimistic alike for every candidate), and its accuracy with the "prior" calibration (the training mix alone,
no held-out label: not optimistic). Prints a table per data set: mean and 95% t-interval over folds, and
the time per fold. Candidates that pretrain the same way share one
encoder per data set (pretrained once on all its training images, labels unused); its time is left out of the
seconds per fold. With ``--busi-masks``, BUSI's training images carry their lesion masks, which only the
candidates with a mask weight use (``train --masks``); PneumoniaMNIST has none, so those candidates skip it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported

import numpy as np

from medlite.train.calibration import balanced_accuracy, decisions
from medlite.train.calibration import fit as fit_calibration
from medlite.train.config import load_config
from medlite.train.crossval import cross_validate, folds, interval
from medlite.train.data import Arrays, load_training_data
from medlite.train.pretrain import encoder_for

STRONG = {"rotation_deg": 15.0, "shift": 0.12, "zoom": 0.2, "brightness": 0.15, "contrast": 0.25}
INNER_VAL = "inner validation"  # a candidate's key (not a recipe field): cross_validate(inner_val=True)
# The small CNN's default widths with its map halved once more: 8x8 at 128 px.
FOUR_STAGES = {"model_options": {"width": 32, "dense": 128, "dropout": 0.3, "stages": 4}}
CANDIDATES = {
    "default (12 epochs)": {},
    "60 epochs": {"epochs": 60, "patience": 20},
    "60 epochs, strong augmentation": {"epochs": 60, "patience": 20, **STRONG},
    "60 epochs, strong augmentation, weight decay 1e-3": {"epochs": 60, "patience": 20, "weight_decay": 1e-3,
                                                          **STRONG},
    "60 epochs, strong augmentation, width 16": {"epochs": 60, "patience": 20, **STRONG,
                                                 "model_options": {"width": 16, "dense": 64, "dropout": 0.3}},
    "60 epochs, SimCLR pretraining": {"epochs": 60, "patience": 20, "pretrain": "simclr"},
    # Left and right mirror each other in a breast's ultrasound, not in a chest (heart, situs).
    "60 epochs, SimCLR pretraining, horizontal flip": {"epochs": 60, "patience": 20, "pretrain": "simclr",
                                                       "horizontal_flip": True},
    "60 epochs, SimCLR pretraining, 4 stages": {"epochs": 60, "patience": 20, "pretrain": "simclr", **FOUR_STAGES},
    "60 epochs, SimCLR pretraining, 4 stages, last epoch": {"epochs": 60, "pretrain": "simclr", "checkpoint": "last",
                                                            **FOUR_STAGES},
    "60 epochs, restore pretraining": {"epochs": 60, "patience": 20, "pretrain": "restore"},
    "60 epochs, SimCLR pretraining, strong augmentation": {"epochs": 60, "patience": 20, "pretrain": "simclr",
                                                           **STRONG},
    "60 epochs, SimCLR pretraining, finding masks": {"epochs": 60, "patience": 20, "pretrain": "simclr",
                                                     "mask_weight": 1.0},
    # The schedule's end instead of the epoch a fold scores best at (which the fold itself picks: optimistic).
    "60 epochs, SimCLR pretraining, last epoch": {"epochs": 60, "pretrain": "simclr", "checkpoint": "last"},
    "60 epochs, SimCLR pretraining, finding masks, last epoch": {"epochs": 60, "pretrain": "simclr",
                                                                 "mask_weight": 1.0, "checkpoint": "last"},
    # More steps: 171 images make 3 steps of 64 an epoch, so 60 epochs are 180 steps in all.
    "150 epochs, SimCLR pretraining, last epoch": {"epochs": 150, "pretrain": "simclr", "checkpoint": "last"},
    # Fine-tuned at batch 16. Run with a candidate above, it starts from that candidate's encoder, pretrained
    # at batch 64 (an encoder's key leaves the batch out, and SimCLR wants big batches).
    "60 epochs, batch 16, SimCLR pretraining, last epoch": {"epochs": 60, "batch_size": 16, "pretrain": "simclr",
                                                           "checkpoint": "last"},
    "60 epochs, SimCLR pretraining, mixup 0.4, last epoch": {"epochs": 60, "pretrain": "simclr", "mixup": 0.4,
                                                            "checkpoint": "last"},
    # The small-data recipe as `medlite train` runs it: the epoch picked by a tenth of each fold's training
    # images, not by the held-out fold (which flatters "best epoch" above).
    "60 epochs, SimCLR pretraining, best epoch on a validation split": {"epochs": 60, "patience": 20,
                                                                        "pretrain": "simclr", INNER_VAL: True},
    # Another family: EfficientNet-Lite0 fine-tuned from ImageNet weights, its own recipe as it stands.
    "EfficientNet-Lite0 from ImageNet weights": {"model": "efficientnet_lite0"},
    # Mirrored images too: a breast's ultrasound has no left-right anatomy (the recipe cannot know a chest's has).
    "EfficientNet-Lite0 from ImageNet weights, horizontal flip": {"model": "efficientnet_lite0",
                                                                  "horizontal_flip": True},
    # The larger encoder: EfficientNet-Lite2 (1.1 times wider, 1.2 deeper), its recipe the same as Lite0's.
    "EfficientNet-Lite2 from ImageNet weights": {"model": "efficientnet_lite2"},
}
MASKLESS = {"mask_weight": 0.0}  # every candidate that names no mask weight ignores the masks


def compare(data, overrides: dict, k: int, encoders: dict, tmp: str) -> dict:
    """One candidate's cross-validation: the folds' AUC, the balanced accuracy of the held-out scores with the
    multi-class calibration fitted on each fold itself (optimistic alike for every candidate), and their
    accuracy with the "prior" calibration."""
    overrides = dict(overrides)
    inner_val = overrides.pop(INNER_VAL, False)
    config = load_config(family=overrides.get("model")).updated(**{**MASKLESS, **overrides})
    n = len(data.label_names)
    init = None
    if config.pretrain != "none":
        key = (data.name, config.model, repr(config.model_options), config.pretrain, config.pretrain_epochs)
        if key not in encoders:
            pooled = Arrays.joined([data.splits[s] for s in ("train", "val") if s in data.splits])
            encoders[key] = encoder_for(pooled.x, config, f"{tmp}/{len(encoders)}")
        init = encoders[key]
    cv = cross_validate(data, config, k, init=init, inner_val=inner_val,
                        progress=lambda i, k, auc: print(f"    fold {i}/{k}: AUC {auc:.3f}", flush=True))
    bals, accs = [], []
    if n > 2:
        counts = np.bincount(cv["y"], minlength=n)
        # "prior" needs no held-out label (the training mix alone), so its accuracy is an honest one
        prior = fit_calibration("prior", cv["y"], cv["probs"], counts)["weights"]
        for held in folds(cv["y"], k, config.seed):
            y, p = cv["y"][held], cv["probs"][held]
            weights = fit_calibration("balanced", y, p, counts).get("weights")
            bals.append(balanced_accuracy(y, decisions(p, weights), n))
            accs.append(float((decisions(p, prior) == y).mean()))
    return {"auc": cv["auc"], "balanced_accuracy": interval(bals) if bals else None,
            "accuracy": interval(accs) if accs else None,
            "seconds": cv["seconds"] / k, "best_epochs": cv["best_epochs"]}


def pneumonia_sample(data_dir: Path, n: int = 500):
    """The first ``n`` images of PneumoniaMNIST's training split, as a data set of its own."""
    data = load_training_data("pneumoniamnist", data_dir=data_dir)
    tr = data.splits["train"]
    return dataclasses.replace(data, splits={"train": tr.take(slice(0, n)), "val": tr.take(slice(0, 0))})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MEDLITE_DATA_DIR", "../shared/data")))
    ap.add_argument("--busi-train", type=Path, required=True, help="BUSI's training half (busi_localisation.py)")
    ap.add_argument("--busi-masks", type=Path, help="BUSI's lesion masks (../shared/data/busi/masks)")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--busi-size", type=int, default=128, help="BUSI's input side in pixels")
    ap.add_argument("--crop", default="center", help="BUSI's preprocessing crop: center or none")
    ap.add_argument("--only", nargs="*", help="candidate names to run (default all)")
    ap.add_argument("--sets", default="busi,pneumonia", help="data sets to run, of busi and pneumonia")
    args = ap.parse_args()
    sets = {}
    if "busi" in args.sets:
        sets[f"BUSI training half, {args.busi_size} px"] = load_training_data(
            str(args.busi_train), image_size=args.busi_size, masks=args.busi_masks, crop=args.crop)
    if "pneumonia" in args.sets:
        sets["PneumoniaMNIST, 500 training images, 28 px"] = pneumonia_sample(args.data_dir)
    for name, data in sets.items():
        n = sum(len(data.splits[s].y) for s in ("train", "val"))
        print(f"\n{name}: {n} images, {len(data.label_names)} classes, {args.folds}-fold cross-validation\n",
              flush=True)
        rows, encoders = [], {}
        with tempfile.TemporaryDirectory(prefix="medlite-encoders-") as tmp:
            for cand, overrides in CANDIDATES.items():
                if (args.only and cand not in args.only) or ("mask_weight" in overrides and
                                                             data.splits["train"].masks is None):
                    continue
                print(f"  {cand}", flush=True)
                rows.append(table_row(cand, compare(data, overrides, args.folds, encoders, tmp)))
                print(rows[-1], flush=True)
        print("\n| recipe | AUC (mean, 95% CI) | fold AUCs | balanced accuracy, calibrated on the fold | "
              "accuracy, prior | best epochs | s per fold |")
        print("| --- | --- | --- | --- | --- | --- | ---: |")
        print("\n".join(rows), flush=True)


def table_row(cand: str, r: dict) -> str:
    """One candidate's Markdown row: each figure as its mean (95% interval over folds)."""
    def ci(v):
        return "-" if v is None else f"{v[0]:.3f} ({v[1]:.3f}-{v[2]:.3f})"
    a = r["auc"]
    return (f"| {cand} | {ci((a['mean'], *a['ci95']))} | {', '.join(f'{x:.3f}' for x in a['per_fold'])} | "
            f"{ci(r['balanced_accuracy'])} | {ci(r['accuracy'])} | {', '.join(map(str, r['best_epochs']))} | "
            f"{r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
