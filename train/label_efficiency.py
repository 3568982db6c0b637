"""The label-efficiency curve: how a recipe's AUC grows with the share of the training images that carry a
label, which is what a hospital needs to decide how many images to label. Each share is a stratified sample
of the training split (the same seed, so a smaller share is inside a larger one); it is trained as
``medlite train`` trains (its recipe chosen by the sample's size) and scored on the test split, or on
validation where the data have no test split, with a 95% bootstrap interval. Given an encoder (pretrained on all
the training images, the unlabelled rest included, or ImageNet's weights), each share is trained twice: from
scratch and from it."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

from ..edge.metrics import bootstrap_auc_ci, ovr_auc, roc_auc
from .data import TrainingData
from .fit import positive_index, steps_per_epoch, train
from .pretrain import IMAGENET, describe


def nested_samples(y: np.ndarray, fractions: list[float], seed: int) -> dict[float, np.ndarray]:
    """For each fraction, the indices of a stratified sample of ``y`` (at least 2 per class); a smaller
    fraction's sample is a subset of a larger one's."""
    rng = np.random.default_rng(seed)
    order = {c: rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)}
    return {f: np.sort(np.concatenate([idx[:max(2, round(len(idx) * f))] for idx in order.values()]))
            for f in fractions}


def curve(data: TrainingData, fractions: list[float], config_for, progress=None, encoder=None) -> list[dict]:
    """One row per fraction (two with ``encoder``: from scratch, then pretrained): labelled images, the recipe
    used, the epochs and optimiser steps it ran (a recipe's floor on steps raises a small share's epochs), AUC
    and its interval on the evaluation split. ``config_for(n_train)`` gives the recipe for a training
    split of that many images and its name."""
    tr = data.splits["train"]
    split = "test" if "test" in data.splits else "val"
    ev = data.splits[split]
    method = describe(encoder)["method"] if encoder else None
    rows = []
    for f, idx in nested_samples(tr.y, fractions, seed=0).items():
        config, recipe = config_for(len(idx))
        sample = dataclasses.replace(data, splits={**data.splits, "train": tr.take(idx)})
        pos = positive_index(data, config)
        for init in (None, encoder) if encoder else (None,):
            result = train(sample, config, init=init)
            auc, ci = auc_with_ci(ev.y, result.model.predict(ev.x, batch_size=256, verbose=0), pos)
            rows.append({"fraction": f, "labelled_images": int(len(idx)), "recipe": recipe,
                         "pretrained": init is not None, "pretraining": method if init else "none",
                         "split": split, "auc": float(auc),
                         "auc_ci95": [float(ci[0]), float(ci[1])], "best_epoch": result.best_epoch,
                         "epochs": len(result.log), "steps": len(result.log) * steps_per_epoch(len(idx), config)})
            if progress:
                progress(rows[-1])
    return rows


def auc_with_ci(y: np.ndarray, probs: np.ndarray, pos: int | None) -> tuple[float, tuple[float, float]]:
    """The AUC of the positive class ``pos`` (one-vs-rest macro where None) and its 95% bootstrap interval."""
    if pos is not None:
        return roc_auc(y == pos, probs[:, pos]), bootstrap_auc_ci(y == pos, probs[:, pos])
    return ovr_auc(y, probs), _ovr_ci(y, probs)


def _ovr_ci(y: np.ndarray, probs: np.ndarray, n: int = 500, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        values.append(ovr_auc(y[i], probs[i]))
    values = [v for v in values if not np.isnan(v)]
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def start(row: dict) -> str:
    """Where a row's model started: from scratch, from ImageNet weights, or from an encoder of that method."""
    method = row["pretraining"]
    return {"none": "from scratch", IMAGENET: "from ImageNet weights"}.get(method, f"from an encoder pretrained by {method}")


def write(rows: list[dict], out: Path, title: str) -> list[Path]:
    """label_efficiency.csv, .md and (with matplotlib) .png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "label_efficiency.csv", out / "label_efficiency.md"]
    with open(paths[0], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fraction", "labelled_images", "pretrained", "pretraining", "recipe", "epochs", "steps", "split",
                    "auc", "auc_ci95_low", "auc_ci95_high"])
        for r in rows:
            w.writerow([r["fraction"], r["labelled_images"], r["pretrained"], r["pretraining"], r["recipe"],
                        r["epochs"], r["steps"], r["split"], f"{r['auc']:.4f}", f"{r['auc_ci95'][0]:.4f}",
                        f"{r['auc_ci95'][1]:.4f}"])
    lines = [f"# Label efficiency: {title}", "",
             "| share of labels | labelled images | start | epochs | steps | AUC | 95% CI | scored on |",
             "| ---: | ---: | --- | ---: | ---: | ---: | --- | --- |"]
    lines += [f"| {r['fraction']:g} | {r['labelled_images']} | {start(r)} | {r['epochs']} | {r['steps']} | "
              f"{r['auc']:.4f} | "
              f"{r['auc_ci95'][0]:.4f}-{r['auc_ci95'][1]:.4f} | {r['split']} |" for r in rows]
    paths[1].write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the figure needs medlite[report]; the table says it all
        return paths
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for pretrained, marker in ((False, "o-"), (True, "s--")):
        line = [r for r in rows if r["pretrained"] == pretrained]
        if not line:
            continue
        n, auc = [r["labelled_images"] for r in line], [r["auc"] for r in line]
        ax.errorbar(n, auc, yerr=[[a - r["auc_ci95"][0] for a, r in zip(auc, line)],
                                  [r["auc_ci95"][1] - a for a, r in zip(auc, line)]], fmt=marker, capsize=3,
                    label=start(line[0]))
    ax.legend(loc="lower right")
    ax.set_xscale("log")
    counts = sorted({r["labelled_images"] for r in rows})
    ax.set_xticks(counts, [str(n) for n in counts])  # the counts themselves, not powers of ten
    ax.minorticks_off()
    ax.set_xlabel("labelled training images (log scale)")
    ax.set_ylabel(f"AUC on the {rows[0]['split']} split, 95% interval")
    ax.set_title(f"Label efficiency: {title}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "label_efficiency.png")
    plt.close(fig)
    return paths + [out / "label_efficiency.png"]
