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
from .data import TrainingData, load_training_data
from .evaluate import evaluate, operating_point_name
from .fit import positive_class, train


def load_data_for(source: str, config: TrainConfig, data_dir=None) -> TrainingData:
    return load_training_data(source, data_dir=data_dir, image_size=config.image_size, color=config.color,
                              val_fraction=config.val_fraction, seed=config.seed)


def intended_use(data: TrainingData, config: TrainConfig) -> IntendedUse:
    """The recipe's --modality/--body-part/--age-range where given, else what the training data say of
    themselves."""
    def listed(text):
        return tuple(t.strip().upper() for t in text.split(",") if t.strip()) if text else None

    found = data.intended_use
    ages = parse_age_range(config.age_range) if config.age_range else found.age_years
    return IntendedUse(listed(config.modality) or found.modalities, listed(config.body_part) or found.body_parts,
                       found.description, ages, config.if_age_missing)


def parse_age_range(text: str) -> tuple[float, float]:
    """"1-5" (years), "0m-18m" (months), "6m-5" (mixed) to (min, max) in years."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([my]?)\s*-\s*(\d+(?:\.\d+)?)\s*([my]?)\s*", text.lower())
    if not match:
        raise ValueError(f"age range {text!r} is not MIN-MAX in years (1-5), or in months with m (0m-18m)")
    lo, hi = (float(match.group(i)) / (12 if match.group(i + 1) == "m" else 1) for i in (1, 3))
    if lo > hi:
        raise ValueError(f"age range {text!r}: the minimum is above the maximum")
    return lo, hi


def train_bundle(source: str, config: TrainConfig, out: str | Path, *, data_dir=None, data: TrainingData | None = None,
                 progress=None, folds: int | None = None, fold_progress=None, recipe: str | None = None
                 ) -> tuple[Path, dict]:
    """Train on ``source`` and write a bundle to ``out``; returns (bundle path, metrics). With ``folds``, the
    recipe is first cross-validated on the training images (``metrics["cross_validation"]``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = data or load_data_for(source, config, data_dir)
    cv = None
    if folds:
        cv = {k: v for k, v in cross_validate(data, config, folds, fold_progress).items() if k not in ("probs", "y")}
    t0 = time.perf_counter()
    result = train(data, config, log_path=out / "train_log.csv", progress=progress)
    pos, pos_how = positive_class(data, config)
    # Validation and test only: the training split's scores are used by nothing.
    probs = {s: result.model.predict(a.x, batch_size=512, verbose=0) for s, a in data.splits.items() if s != "train"}
    test = (data.splits["test"].y, probs["test"]) if "test" in data.splits else None
    counts = np.bincount(data.splits["train"].y, minlength=len(data.label_names))
    threshold, calibration, metrics = evaluate((data.splits["val"].y, probs["val"]), test, pos, config, counts,
                                               seed=config.seed)
    positive = None if pos is None else data.label_names[pos]
    metrics["positive_class"] = {"label": positive, "chosen": pos_how}
    info = {
        "data_source": str(source), "data_name": data.name, "data_sha256": data.sha256,
        "family": config.model, "recipe": recipe or config.model, "parameters": int(result.model.count_params()),
        "best_epoch": result.best_epoch, "epochs_run": len(result.log),
        "train_seconds": round(time.perf_counter() - t0, 1), "seed": config.seed,
        "skipped_files": list(data.skipped), "positive_class": positive,
    }
    contract = Contract(
        input=data.spec, labels=data.label_names, preprocess=data.preprocess, positive_index=pos,
        intended_use=intended_use(data, config),
        threshold=threshold, calibration=calibration,
        operating_point=operating_point_name(config) if pos is not None else
        ("argmax" if not calibration else f"class weights ({calibration['method']}) on validation"),
        provenance={"medlite_version": __version__, "variant": "keras", "family": config.model,
                    "training_data": data.name, "training_data_sha256": data.sha256,
                    "positive_class": positive},
        validation=metrics["validation"],
    )
    metrics["intended_use"] = contract.to_dict()["intended_use"]
    if cv is not None:
        metrics["cross_validation"] = cv
    save_bundle(out, result.model, contract, metrics, config, info)
    return out, {**metrics, "info": info}
