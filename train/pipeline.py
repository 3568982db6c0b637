"""``medlite train`` end to end: data, model, operating point, bundle."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from ..edge.contract import Contract, IntendedUse
from ..edge.version import __version__
from .bundle import save_bundle
from .config import TrainConfig
from .crossval import cross_validate
from .data import TrainingData, load_training_data, unlabelled_images
from .evaluate import evaluate, operating_point_name
from .fit import auc_of, positive_class, train
from .pretrain import describe, encoder_for


def load_data_for(source: str, config: TrainConfig, data_dir=None, masks=None) -> TrainingData:
    return load_training_data(source, data_dir=data_dir, image_size=config.image_size, color=config.color,
                              val_fraction=config.val_fraction, seed=config.seed, masks=masks)


def intended_use(data: TrainingData, config: TrainConfig) -> IntendedUse:
    """The recipe's --modality/--body-part/--view-position/--age-range where given, else what the training data
    say of themselves."""
    def listed(text):
        return tuple(t.strip().upper() for t in text.split(",") if t.strip()) if text else None

    found = data.intended_use
    ages = parse_age_range(config.age_range) if config.age_range else found.age_years
    return IntendedUse(listed(config.modality) or found.modalities, listed(config.body_part) or found.body_parts,
                       found.description, ages, config.if_age_missing,
                       listed(config.view_position) or found.view_positions)


def parse_age_range(text: str) -> tuple[float, float]:
    """"1-5" (years), "0m-18m" (months), "6m-5" (mixed) to (min, max) in years."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([my]?)\s*-\s*(\d+(?:\.\d+)?)\s*([my]?)\s*", text.lower())
    if not match:
        raise ValueError(f"age range {text!r} is not MIN-MAX in years (1-5), or in months with m (0m-18m)")
    lo, hi = (float(match.group(i)) / (12 if match.group(i + 1) == "m" else 1) for i in (1, 3))
    if lo > hi:
        raise ValueError(f"age range {text!r}: the minimum is above the maximum")
    return lo, hi


def pretrained_encoder(data: TrainingData, config: TrainConfig, out: Path, unlabelled=(), progress=None) -> Path:
    """Pretrain the recipe's encoder (``config.pretrain``) on the training split's images, their labels unused,
    and the images under the ``unlabelled`` folders; saved in ``out/encoder``."""
    x, skipped = data.splits["train"].x, []
    if unlabelled:
        extra, skipped = unlabelled_images(unlabelled, data.spec, data.preprocess)
        x = np.concatenate([x, extra])
    return encoder_for(x, config, out / "encoder", progress,
                       {"training_images": int(len(data.splits["train"].x)),
                        "unlabelled_folders": [str(u) for u in unlabelled], "unlabelled_skipped": skipped})


def masks_used(data: TrainingData, config: TrainConfig) -> int | None:
    """How many training images taught the model where their finding is (--masks), or None."""
    tr = data.splits["train"]
    if tr.masks is None or config.mask_weight <= 0:
        return None
    return int(tr.with_mask.sum())


def train_bundle(source: str, config: TrainConfig, out: str | Path, *, data_dir=None, data: TrainingData | None = None,
                 progress=None, folds: int | None = None, fold_progress=None, recipe: str | None = None,
                 init: str | Path | None = None, unlabelled=(), pretrain_progress=None, distil: bool = False
                 ) -> tuple[Path, dict]:
    """Train on ``source`` and write a bundle to ``out``; returns (bundle path, metrics). The model starts from
    the encoder ``init`` where given, else from one pretrained here when the recipe says so (``out/encoder``, on
    the training images and the ``unlabelled`` folders). With ``folds``, the recipe is first cross-validated on
    the training images (``metrics["cross_validation"]``), from the same encoder, and the multi-class calibration
    is fitted on its held-out scores; with ``distil`` too, the model learns from the folds' ensemble (its scores
    of the training images, mixed with the labels) as well as from the labels."""
    if distil and not folds:
        raise ValueError("distilling needs the folds' models: give folds")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = data or load_data_for(source, config, data_dir)
    if init is None and config.pretrain != "none":
        init = pretrained_encoder(data, config, out, unlabelled, pretrain_progress)
    pretraining = None if init is None else {**describe(init), "folder": str(init)}
    cv, held_out, teacher = None, None, None
    if folds:
        tr, test = data.splits["train"], data.splits.get("test")
        teach = None if not distil else tr.x if test is None else np.concatenate([tr.x, test.x])
        cv = cross_validate(data, config, folds, fold_progress, init=init, teach=teach)
        held_out, teacher = (cv.pop("y"), cv.pop("probs")), cv.pop("ensemble", None)
        if teacher is not None and test is not None:  # how the teacher itself does on the test split
            pos = positive_class(data, config)[0]
            cv["ensemble_test_auc"] = auc_of(test.y, teacher[len(tr.x):], pos)
            teacher = teacher[:len(tr.x)]
    t0 = time.perf_counter()
    result = train(data, config, log_path=out / "train_log.csv", progress=progress, init=init, teacher=teacher)
    pos, pos_how = positive_class(data, config)
    # Validation and test only: the training split's scores are used by nothing.
    probs = {s: result.model.predict(a.x, batch_size=512, verbose=0) for s, a in data.splits.items() if s != "train"}
    test = (data.splits["test"].y, probs["test"]) if "test" in data.splits else None
    counts = np.bincount(data.splits["train"].y, minlength=len(data.label_names))
    threshold, calibration, metrics = evaluate((data.splits["val"].y, probs["val"]), test, pos, config, counts,
                                               seed=config.seed, held_out=held_out)
    positive = None if pos is None else data.label_names[pos]
    metrics["positive_class"] = {"label": positive, "chosen": pos_how}
    info = {
        "data_source": str(source), "data_name": data.name, "data_sha256": data.sha256,
        "family": config.model, "recipe": recipe or config.model, "parameters": int(result.model.count_params()),
        "best_epoch": result.best_epoch, "epochs_run": len(result.log),
        "train_seconds": round(time.perf_counter() - t0, 1), "seed": config.seed,
        "skipped_files": list(data.skipped), "positive_class": positive, "pretraining": pretraining,
        "finding_masks": masks_used(data, config),
        "distilled_from": f"the ensemble of {folds} cross-validation folds' models" if distil else None,
    }
    contract = Contract(
        input=data.spec, labels=data.label_names, preprocess=data.preprocess, positive_index=pos,
        intended_use=intended_use(data, config),
        threshold=threshold, calibration=calibration,
        operating_point=operating_point_name(config) if pos is not None else
        ("argmax" if not calibration else f"class weights ({calibration['method']}) on "
         f"{'cross-validation scores' if held_out is not None else 'validation'}"),
        provenance={"medlite_version": __version__, "variant": "keras", "family": config.model,
                    "training_data": data.name, "training_data_sha256": data.sha256,
                    "positive_class": positive,
                    "pretraining": None if pretraining is None else pretraining["method"]},
        validation=metrics["validation"],
    )
    metrics["intended_use"] = contract.to_dict()["intended_use"]
    if cv is not None:
        metrics["cross_validation"] = cv
    save_bundle(out, result.model, contract, metrics, config, info)
    return out, {**metrics, "info": info}
