"""A recipe's candidates judged on training splits only: a share of a training split's labels trained with the
recipe and with each candidate's fields changed, scored on the rest of that training split (the images whose labels
the share left out; no test image is read).

    python benchmarks/recipe_on_the_rest.py --busi-train busi-A/split/train [--busi-train ...] [--pneumonia-lite0]
        [--fraction 0.5] [--no-recipe] --candidate zoom=0.3 --candidate min_steps=480,epochs=30

Data sets as in ``step_floor.py``: BUSI training halves at 128 px (EfficientNet-Lite0's recipe from ImageNet
weights, which ``medlite train`` picks for them) and PneumoniaMNIST's 500-image sample enlarged to 128 px (the same
recipe on a second task). A candidate is FIELD=VALUE[,FIELD=VALUE...] over the recipe's fields (values read as YAML).
Training is deterministic (the same seed, op determinism), so the recipe's row is the same in every run and
``--no-recipe`` leaves it out where it is known. Prints one Markdown row per data set and candidate: AUC (one-vs-rest
macro for BUSI) with its 95% bootstrap interval, the malignant class's AUC for BUSI, the AUC of each image's scores
averaged with its mirror's (flips at test time), epochs and seconds.
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
import yaml

from medlite.edge.metrics import roc_auc
from medlite.train.config import load_config
from medlite.train.data import load_training_data
from medlite.train.fit import epochs_for, positive_index, train
from medlite.train.label_efficiency import auc_with_ci, nested_samples
from medlite.train.pretrain import encoder_for
from step_floor import data_arguments, enlarged, pneumonia_sample


def candidate(text: str) -> dict:
    """FIELD=VALUE[,FIELD=VALUE...] as recipe fields."""
    return {k.strip(): yaml.safe_load(v) for k, v in (part.split("=", 1) for part in text.split(","))}


def rows_for(name: str, data, config, candidates: list[tuple[str, dict]], fraction: float, tmp: str) -> list[str]:
    tr = data.splits["train"]
    idx = nested_samples(tr.y, [fraction], seed=0)[fraction]
    rest = np.setdiff1d(np.arange(len(tr.y)), idx)
    sample = dataclasses.replace(data, splits={**data.splits, "train": tr.take(idx)})
    encoder = encoder_for(tr.x, config, f"{tmp}/{name}")
    pos = positive_index(data, config)
    malignant = data.label_names.index("malignant") if "malignant" in data.label_names else None
    rows = []
    for text, fields in candidates:
        cfg = config.updated(**fields)
        t0 = time.perf_counter()
        model = train(sample, cfg, init=encoder).model
        probs = model.predict(tr.x[rest], batch_size=256, verbose=0)
        auc, (low, high) = auc_with_ci(tr.y[rest], probs, pos)
        mal = f"{roc_auc(tr.y[rest] == malignant, probs[:, malignant]):.3f}" if malignant is not None else "-"
        # the mean of each image's scores and its mirror's: what averaging over flips at test time would add
        mirrored = (probs + model.predict(tr.x[rest][:, :, ::-1], batch_size=256, verbose=0)) / 2
        rows.append(f"| {name} | {len(idx)} | {text} | {epochs_for(len(idx), cfg)} | {auc:.3f} ({low:.3f}-{high:.3f})"
                    f" | {mal} | {auc_with_ci(tr.y[rest], mirrored, pos)[0]:.3f} | {len(rest)}"
                    f" | {time.perf_counter() - t0:.0f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_arguments(ap)
    ap.add_argument("--fraction", type=float, default=0.5, help="the share of a training split's labels trained")
    ap.add_argument("--candidate", action="append", default=[], help="FIELD=VALUE[,FIELD=VALUE...]; repeatable")
    ap.add_argument("--no-recipe", action="store_true", help="leave out the recipe's own row")
    args = ap.parse_args()
    config = load_config(None, "efficientnet_lite0").updated(image_size=128)
    candidates = ([] if args.no_recipe else [("the recipe", {})]) + [(t, candidate(t)) for t in args.candidate]
    for _, fields in candidates:
        config.updated(**fields)  # an unknown field fails here, before any training
    sets = [(f"BUSI {p.parent.parent.name}", load_training_data(str(p), image_size=128)) for p in args.busi_train]
    if args.pneumonia_lite0:
        sets.append(("PneumoniaMNIST 500, 128 px", enlarged(pneumonia_sample(args.data_dir))))
    rows = []
    with tempfile.TemporaryDirectory(prefix="medlite-recipe-on-the-rest-") as tmp:
        for name, data in sets:
            rows += rows_for(name, data, config, candidates, args.fraction, tmp)
    print("\n| data set | labelled images | candidate | epochs | AUC on the rest (95% CI) | malignant AUC "
          "| AUC with mirrors | rest | s |")
    print("| --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
