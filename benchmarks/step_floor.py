"""A floor on optimiser steps, chosen on training splits only: a share of a training split's labels trained
with the recipe as it stands and with its epochs raised to at least ``--floors`` steps, scored on the rest of
that training split (images whose labels the share left out; no test image is read).

    python benchmarks/step_floor.py --busi-train busi-A/split/train [--busi-train busi-B/split/train]
        [--pneumonia] [--pneumonia-lite0] [--fractions 0.1,0.25] [--floors 0,240]

Data sets: BUSI training halves (``benchmarks/busi_localisation.py`` writes OUT/split/train; 128 px, so the
recipe that ``medlite train`` picks for them is EfficientNet-Lite0's from ImageNet weights) and a 500-image sample
of PneumoniaMNIST's training split (28 px: the small CNN's small-data recipe, SimCLR on the 500 images);
with ``--pneumonia-lite0``, the same sample enlarged to 128 px (cv2.INTER_CUBIC) for EfficientNet-Lite0's
recipe, so that the ImageNet recipe is judged on a second task (blurred chests, not a hospital's own images). As in
``medlite train --label-fractions``: the share is the curve's nested stratified sample of the training split,
the encoder is pretrained once on all of it (labels unused) or read from ImageNet, and the model keeps the
schedule's end, so its validation split (a tenth of the training half; PneumoniaMNIST's own) picks nothing.
Prints one Markdown row per data set, share and floor: AUC (one-vs-rest macro for BUSI) and its 95% bootstrap
interval on the rest, epochs, steps and seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported

import numpy as np

from medlite.train.config import load_config
from medlite.train.data import load_training_data
from medlite.train.fit import epochs_for, positive_index, steps_per_epoch, train
from medlite.train.label_efficiency import auc_with_ci, nested_samples
from medlite.train.pretrain import encoder_for


def pneumonia_sample(data_dir: Path, n: int = 500, n_val: int = 52):
    """The first ``n`` images of PneumoniaMNIST's training split, and the first ``n_val`` of its validation split."""
    data = load_training_data("pneumoniamnist", data_dir=data_dir)
    tr, va = data.splits["train"], data.splits["val"]
    return dataclasses.replace(data, splits={"train": tr.take(slice(0, n)), "val": va.take(slice(0, n_val))})


def enlarged(data, side: int = 128):
    """``data`` with every image enlarged to ``side`` px, for a family that needs large images."""
    import cv2

    def grow(a):
        x = np.stack([cv2.resize(i[..., 0], (side, side), interpolation=cv2.INTER_CUBIC) for i in a.x])[..., None]
        return dataclasses.replace(a, x=np.clip(x, 0, 1).astype(a.x.dtype))

    spec = dataclasses.replace(data.spec, height=side, width=side)
    return dataclasses.replace(data, spec=spec, splits={s: grow(a) for s, a in data.splits.items()})


def rows_for(name: str, data, config, fractions: list[float], floors: list[int], tmp: str) -> list[str]:
    """Each share of ``data``'s training labels, trained with each floor from one encoder, scored on the rest."""
    tr = data.splits["train"]
    encoder = encoder_for(tr.x, config, f"{tmp}/{name}")
    pos = positive_index(data, config)
    rows = []
    for f, idx in nested_samples(tr.y, fractions, seed=0).items():
        rest = np.setdiff1d(np.arange(len(tr.y)), idx)
        sample = dataclasses.replace(data, splits={**data.splits, "train": tr.take(idx)})
        for floor in floors:
            cfg = config.updated(min_steps=floor)
            epochs = epochs_for(len(idx), cfg)
            t0 = time.perf_counter()
            model = train(sample, cfg, init=encoder).model
            probs = model.predict(tr.x[rest], batch_size=256, verbose=0)
            auc, (low, high) = auc_with_ci(tr.y[rest], probs, pos)
            steps = epochs * steps_per_epoch(len(idx), cfg)
            rows.append(f"| {name} | {len(idx)} ({f:g}) | {floor or 'none'} | {epochs} | {steps} | "
                        f"{auc:.3f} ({low:.3f}-{high:.3f}) | {len(rest)} | {time.perf_counter() - t0:.0f} |")
            print(rows[-1], flush=True)
    return rows


def data_arguments(ap: argparse.ArgumentParser) -> None:
    """The data sets' options, shared with ``recipe_on_the_rest.py``."""
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MEDLITE_DATA_DIR", "../shared/data")))
    ap.add_argument("--busi-train", type=Path, action="append", default=[],
                    help="a BUSI training half (busi_localisation.py's OUT/split/train); repeatable")
    ap.add_argument("--pneumonia-lite0", action="store_true",
                    help="also PneumoniaMNIST's 500-image sample enlarged to 128 px, with EfficientNet-Lite0's recipe")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_arguments(ap)
    ap.add_argument("--pneumonia", action="store_true", help="also a 500-image sample of PneumoniaMNIST")
    ap.add_argument("--fractions", default="0.1,0.25")
    ap.add_argument("--floors", default="0,240", help="steps; 0 is the recipe as it stands")
    args = ap.parse_args()
    fractions = [float(f) for f in args.fractions.split(",")]
    floors = [int(s) for s in args.floors.split(",")]
    sets = [(f"BUSI {p.parent.parent.name}", load_training_data(str(p), image_size=128),
             load_config(None, "efficientnet_lite0")) for p in args.busi_train]
    if args.pneumonia:
        sets.append(("PneumoniaMNIST 500", pneumonia_sample(args.data_dir),
                     load_config(None, "small_cnn", small_data=True)))
    if args.pneumonia_lite0:
        sets.append(("PneumoniaMNIST 500, 128 px", enlarged(pneumonia_sample(args.data_dir)),
                     load_config(None, "efficientnet_lite0")))
    rows = []
    with tempfile.TemporaryDirectory(prefix="medlite-step-floor-") as tmp:
        for name, data, config in sets:
            print(f"{name}: {len(data.splits['train'].y)} training images, recipe {config.model} "
                  f"({config.epochs} epochs at batch {config.batch_size}, pretraining {config.pretrain})", flush=True)
            rows += rows_for(name, data, config, fractions, floors, tmp)
    print("\n| data set | labelled images (share) | step floor | epochs | steps | AUC on the rest (95% CI) | "
          "rest | s |")
    print("| --- | --- | --- | ---: | ---: | --- | ---: | ---: |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
