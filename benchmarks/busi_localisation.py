"""Small data on BUSI: train on a few hundred breast ultrasound images with class labels alone, then measure on
the images kept aside the deployed models' decisions (accuracy, one-vs-rest AUC per class, the multi-class
calibrations compared) and their heatmaps against the expert masks.

    python benchmarks/busi_localisation.py --data-dir ../shared/data --out busi-run/ [--test-fraction 0.5]

1. Splits BUSI (``busi/images``) by class, with a fixed seed, into train and a held-out test (``--test-fraction``,
   default half), as links in ``OUT/split/{train,test}/<class>/``.
2. ``medlite train --data OUT/split --image-size 128`` (the default recipe; validation is drawn from train),
   timed; ``medlite convert`` to fp32 and the integer variants.
3. For every held-out image with a lesion (benign, malignant), each model's heatmap through
   ``medlite.edge`` (``predict(..., heatmap=True)``: the map of the most probable class other than normal), at
   the image's own size (256 px on the longer side):
   - pointing game: the peak lies within 15 px of the lesion mask (the union of the image's masks);
   - box IoU: the heatmap's box (the region around the peak at half the peak) against the mask's box;
   - the image centre as the trivial baseline: its point, and a box over the middle half of each side.
   Also the one-vs-rest test AUC of each model, and the Pearson correlation of each integer variant's
   heatmaps with fp32's on the same images.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

TOLERANCE_PX = 15


def split(busi: Path, out: Path, test_fraction: float = 0.5, seed: int = 0) -> list[Path]:
    """Links to BUSI's images in OUT/{train,test}/<class>/; the held-out test images."""
    rng = random.Random(seed)
    held = []
    for cls in sorted(p.name for p in (busi / "images").iterdir() if p.is_dir()):
        files = sorted((busi / "images" / cls).glob("*.png"))
        rng.shuffle(files)
        n_test = round(len(files) * test_fraction)
        for part, chosen in (("test", files[:n_test]), ("train", files[n_test:])):
            (out / part / cls).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                link = out / part / cls / f.name
                if not link.exists():
                    os.symlink(f.resolve(), link)
        held.extend(files[:n_test])
    return held


def medlite(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medlite", *args, "-q"], check=True, cwd=tempfile.gettempdir())
    return time.perf_counter() - t0


def lesion_mask(busi: Path, row: dict) -> np.ndarray:
    masks = [cv2.imread(str(busi / m), cv2.IMREAD_GRAYSCALE) for m in row["mask_files"].split(";") if m]
    return np.any([m > 0 for m in masks], axis=0)


def box_iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def hit(mask: np.ndarray, x: int, y: int) -> bool:
    """The point lies within TOLERANCE_PX of the mask."""
    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    return bool(distance[y, x] <= TOLERANCE_PX)


def evaluate(models: dict[str, Path], busi: Path, held: list[Path]) -> dict:
    from sklearn.metrics import roc_auc_score

    from medlite.edge import decide, load
    from medlite.edge.errors import InputError

    index = {row["image"]: row for row in csv.DictReader(open(busi / "INDEX.tsv"), delimiter="\t")}
    loaded = {name: load(str(p)) for name, p in models.items()}
    labels = loaded[next(iter(loaded))].contract.labels
    out: dict = {name: {"hits": [], "ious": [], "scores": [], "maps": {}} for name in models}
    centre = {"hits": [], "ious": []}
    truth, too_small = [], 0
    for f in held:
        row = index[f"images/{f.parent.name}/{f.name}"]
        try:
            next(iter(loaded.values())).predict(str(f))
        except InputError:  # shorter than the model's input after the centre crop: medlite does not upscale
            too_small += 1
            continue
        truth.append(labels.index(row["class"]))
        mask = lesion_mask(busi, row) if row["mask_files"] else None
        lesion = mask is not None and mask.any()
        for name, model in loaded.items():
            p = model.predict(str(f), heatmap=True)
            out[name]["scores"].append([p.scores[k] for k in labels])
            if lesion:
                out[name]["hits"].append(hit(mask, *p.peak))
                out[name]["ious"].append(box_iou(p.box, [int(row[k]) for k in ("bbox_x0", "bbox_y0", "bbox_x1",
                                                                                 "bbox_y1")]))
                out[name]["maps"][f.name] = p.heatmap.astype(np.float64)
        if lesion:
            h, w = mask.shape
            centre["hits"].append(hit(mask, w // 2, h // 2))
            centre["ious"].append(box_iou((w // 4, h // 4, w - w // 4, h - h // 4),
                                          [int(row[k]) for k in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")]))
    result = {"images": len(truth), "too_small": too_small, "with_lesion": len(centre["hits"]), "labels": labels,
              "truth": truth,
              "centre": {"pointing": float(np.mean(centre["hits"])), "box_iou": float(np.mean(centre["ious"]))}}
    reference = out.get("fp32")
    for name, r in out.items():
        y, s = np.asarray(truth), np.asarray(r["scores"])
        auc = roc_auc_score(y, s, multi_class="ovr")
        decided = decide(s, loaded[name].contract)
        entry = {"test_auc_ovr": float(auc), "pointing": float(np.mean(r["hits"])),
                 "box_iou": float(np.mean(r["ious"])),
                 "auc_per_class": {lab: float(roc_auc_score(y == k, s[:, k])) for k, lab in enumerate(labels)},
                 "accuracy": float((decided == y).mean()), "scores": s.tolist()}
        if reference is not None and name != "fp32":
            rs = [np.corrcoef(reference["maps"][k].ravel(), m.ravel())[0, 1] for k, m in r["maps"].items()
                  if reference["maps"][k].std() > 0 and m.std() > 0]
            entry["heatmap_r_vs_fp32"] = float(np.mean(rs))
            entry["heatmap_r_min"] = float(np.min(rs))
        result[name] = entry
    return result


def calibrations(models: dict[str, Path], split_dir: Path, image_size: int, result: dict) -> dict:
    """Each model's held-out accuracy and balanced accuracy under each calibration method, fitted on the
    model's own scores of the validation split that training drew (the same seed, so the same images)."""
    from medlite.edge import load
    from medlite.train.calibration import METHODS, balanced_accuracy, decisions
    from medlite.train.calibration import fit as fit_calibration
    from medlite.train.config import load_config
    from medlite.train.pipeline import load_data_for

    config = load_config().updated(image_size=image_size)
    data = load_data_for(str(split_dir / "train"), config)
    val, counts = data.splits["val"], np.bincount(data.splits["train"].y, minlength=len(data.label_names))
    y = np.asarray(result["truth"])
    out = {}
    for name, path in models.items():
        model = load(str(path), backend="cpu")
        pv = np.stack([_scores(model, x) for x in val.x])
        held = np.asarray(result[name]["scores"])
        out[name] = {}
        for method in METHODS:
            weights = fit_calibration(method, val.y, pv, counts).get("weights")
            d = decisions(held, weights)
            out[name][method] = {"accuracy": float((d == y).mean()),
                                 "balanced_accuracy": balanced_accuracy(y, d, len(data.label_names)),
                                 "weights": weights}
        out[name]["ceiling"] = ceiling(y, held)
    return out


def ceiling(y: np.ndarray, probs: np.ndarray) -> dict:
    """The best accuracy that any class weights give these held-out scores, the weights chosen on the held-out
    images themselves (every combination of calibration.GRID's log-weights): not a result, but the most that
    a decision could make of these scores. Its balanced accuracy is that of the same weights."""
    from medlite.train.calibration import GRID, balanced_accuracy, decisions

    best = (-1.0, None)
    for logw in itertools.product(GRID, repeat=probs.shape[1] - 1):
        weights = np.exp([0.0, *logw])
        best = max(best, (float((decisions(probs, weights) == y).mean()), list(weights)), key=lambda b: b[0])
    d = decisions(probs, best[1])
    return {"accuracy": best[0], "balanced_accuracy": balanced_accuracy(y, d, probs.shape[1]), "weights": best[1]}


def _scores(model, x: np.ndarray) -> np.ndarray:
    """A training-data array (already preprocessed, float) through the cart's path from the quantization on."""
    from medlite.edge.preprocess import quantize

    return model.classify(quantize(x[None], model.contract.input)).score_array


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MEDLITE_DATA_DIR", "../shared/data")))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--variants", default="fp32,int8,int8-qat,int8-pruned")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--test-fraction", type=float, default=0.5, help="share of each class kept aside (default half)")
    ap.add_argument("--train-args", default="", help="more `medlite train` flags, quoted (e.g. '--folds 5')")
    ap.add_argument("--split-seed", type=int, default=0, help="which random split into halves (default 0)")
    args = ap.parse_args()
    busi = (args.data_dir / "busi").resolve()
    out = args.out.resolve()
    held = split(busi, out / "split", args.test_fraction, args.split_seed)
    shutil.rmtree(out / "bundle", ignore_errors=True)
    # The kept-aside half is the bundle's test split: reported in metrics.json, never used for a choice.
    train_s = medlite("train", "--data", str(out / "split"), "--image-size", str(args.image_size), "--out",
                      str(out / "bundle"), *shlex.split(args.train_args))
    convert_s = medlite("convert", str(out / "bundle"), "--variants", args.variants, "--out", str(out / "models"),
                        "--force", "--allow-drop")
    models = {v: out / "models" / f"{v}.tflite" for v in args.variants.split(",")}
    result = evaluate(models, busi, held)
    result["train_seconds"], result["convert_seconds"] = train_s, convert_s
    result["calibrations"] = calibrations(models, out / "split", args.image_size, result)
    (out / "localisation.json").write_text(json.dumps(result, indent=1))
    print(f"medlite train --image-size {args.image_size} {args.train_args}: {train_s:.0f} s; convert ({args.variants}): "
          f"{convert_s:.0f} s; held-out images {result['images']} ({result['too_small']} more were smaller than the "
          f"input and refused), {result['with_lesion']} with a lesion\n")
    labels = result["labels"]
    print("| model | accuracy | test AUC (one-vs-rest, macro) | " + " | ".join(f"AUC {lab}" for lab in labels) +
          " | pointing game (15 px) | box IoU | heatmap r vs fp32 (mean, min) |")
    print("| --- | ---: | ---: | " + "---: | " * len(labels) + "---: | ---: | ---: |")
    for name in models:
        r = result[name]
        corr = f"{r['heatmap_r_vs_fp32']:.3f}, {r['heatmap_r_min']:.3f}" if "heatmap_r_vs_fp32" in r else "-"
        per = " | ".join(f"{r['auc_per_class'][lab]:.3f}" for lab in labels)
        print(f"| {name} | {r['accuracy']:.3f} | {r['test_auc_ovr']:.3f} | {per} | {r['pointing']:.3f} | "
              f"{r['box_iou']:.3f} | {corr} |")
    c = result["centre"]
    print("| image centre (baseline) | - | - | " + "- | " * len(labels) +
          f"{c['pointing']:.3f} | {c['box_iou']:.3f} | - |")
    print("\nHeld-out accuracy / balanced accuracy by calibration method (each fitted on the model's own validation "
          "scores; the ceiling's weights are chosen on the held-out images themselves, the most any decision "
          "could make of these scores):\n")
    print("| model | " + " | ".join(next(iter(result["calibrations"].values()))) + " |")
    print("| --- |" + " ---: |" * len(next(iter(result["calibrations"].values()))))
    for name, by in result["calibrations"].items():
        print(f"| {name} | " + " | ".join(f"{v['accuracy']:.3f} / {v['balanced_accuracy']:.3f}" for v in by.values())
              + " |")


if __name__ == "__main__":
    main()
