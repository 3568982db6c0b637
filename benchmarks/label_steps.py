"""How many optimiser steps a few labels need: one share of a training split's labels (the label-efficiency
curve's nested sample) trained from an encoder with a given number of epochs, scored on the test split.

    python benchmarks/label_steps.py SPLIT_DIR ENCODER_DIR EPOCHS [--fraction 0.1] [--family efficientnet_lite0]
        [--freeze-batch-norm]

SPLIT_DIR holds train/<class>/ and test/<class>/ (as `busi_localisation.py` writes OUT/split); ENCODER_DIR is
the encoder a `medlite train` of that split left in its bundle's encoder/ (ImageNet weights for EfficientNet-Lite0).
With 24 images and a batch of 32, each epoch is one step: the recipe's 30 epochs are 30 steps.
"""

import argparse
import dataclasses

from medlite.train.config import load_config
from medlite.train.fit import positive_index, train
from medlite.train.label_efficiency import auc_with_ci, nested_samples
from medlite.train.pipeline import load_data_for


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("split")
    ap.add_argument("encoder")
    ap.add_argument("epochs", type=int)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--family", default="efficientnet_lite0")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--freeze-batch-norm", action="store_true", help="the recipe with freeze_batch_norm on")
    args = ap.parse_args()
    # EPOCHS as given: the recipe's floor on steps (min_steps) would raise them
    config = load_config(None, args.family).updated(image_size=args.image_size, epochs=args.epochs, min_steps=0,
                                                    freeze_batch_norm=args.freeze_batch_norm)
    data = load_data_for(args.split, config)
    tr, test = data.splits["train"], data.splits["test"]
    idx = nested_samples(tr.y, [args.fraction], seed=0)[args.fraction]
    sample = dataclasses.replace(data, splits={**data.splits, "train": tr.take(idx)})
    probs = train(sample, config, init=args.encoder).model.predict(test.x, batch_size=256, verbose=0)
    auc, (low, high) = auc_with_ci(test.y, probs, positive_index(data, config))
    frozen = ", batch normalisation frozen" if args.freeze_batch_norm else ""
    print(f"{args.split}: {len(idx)} labelled images, {args.epochs} epochs from {args.encoder}{frozen}: "
          f"AUC {auc:.4f} (95% CI {low:.4f}-{high:.4f}) on {len(test.y)} test images")


if __name__ == "__main__":
    main()
