"""What an ensemble of BUSI models would score on a kept-aside half, from runs already made: no training.

    python benchmarks/busi_ensembles.py busi-A busi-B [busi-C ...] [--variant int8]

Each argument is an ``--out`` folder of ``benchmarks/busi_localisation.py`` on the same split (the same
``--split-seed``), whose ``localisation.json`` keeps every kept-aside image's scores from each variant. The
ensemble's score of an image is the mean of the runs' scores (one ``.tflite`` each, run one after the other on a
cart). Prints the ensemble's one-vs-rest AUC (macro and per class) and its argmax accuracy, beside each run's own.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score


def scores(run: Path, variant: str) -> tuple[list[int], list[str], np.ndarray]:
    """The kept-aside images' true classes, the class names and the variant's scores of one run."""
    result = json.loads((run / "localisation.json").read_text())
    if variant not in result:
        raise SystemExit(f"{run}: no {variant} scores (the run's variants: --variants)")
    return result["truth"], result["labels"], np.asarray(result[variant]["scores"], dtype=np.float64)


def kept_aside(run: Path) -> list[str]:
    """The kept-aside images of a run (``split/test``), by class and name."""
    return sorted(str(f.relative_to(run / "split" / "test")) for f in (run / "split" / "test").rglob("*.png"))


def row(name: str, y: np.ndarray, probs: np.ndarray) -> str:
    per_class = [roc_auc_score(y == k, probs[:, k]) for k in range(probs.shape[1])]
    cells = [f"{roc_auc_score(y, probs, multi_class='ovr'):.3f}", *(f"{a:.3f}" for a in per_class),
             f"{float((probs.argmax(1) == y).mean()):.3f}"]
    return f"| {name} | " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="busi_localisation.py output folders of one split")
    ap.add_argument("--variant", default="int8")
    args = ap.parse_args()
    runs = [scores(run, args.variant) for run in args.runs]
    truth, labels, _ = runs[0]
    # Every half holds as many images of each class, so the classes alone cannot tell two splits apart.
    if any(kept_aside(run) != kept_aside(args.runs[0]) for run in args.runs):
        raise SystemExit("the runs kept different images aside: give runs of one split (--split-seed)")
    y = np.asarray(truth)
    classes = [f"AUC {c}" for c in labels]
    print(f"| {args.variant}, {len(y)} kept-aside images | AUC | " + " | ".join(classes) + " | accuracy (argmax) |")
    print("| --- " * (3 + len(classes)) + "|")
    for run, (_, _, p) in zip(args.runs, runs):
        print(row(run.name, y, p))
    print(row(f"ensemble of {len(runs)}", y, np.mean([p for _, _, p in runs], axis=0)))


if __name__ == "__main__":
    main()
