"""The model bundle: a folder holding a trained model and everything conversion and audit need.

Layout: ``model.keras``, ``contract.json`` (the contract every converted file
will carry), ``metrics.json`` (``validation`` and ``test``), ``train_log.csv``,
``config.yaml`` (the recipe used) and ``bundle.json`` (data source and hash).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..edge.contract import Contract
from ..edge.errors import MedliteError
from ..edge.version import __version__
from .config import TrainConfig
from .tf import keras

MARKER = "bundle.json"
MODEL = "model.keras"


class BundleError(MedliteError, ValueError):
    pass


@dataclass
class Bundle:
    path: Path
    model: "keras.Model"
    contract: Contract
    metrics: dict
    config: TrainConfig
    info: dict  # data source, data sha256, family, parameters, seconds

    @property
    def model_sha256(self) -> str:
        from ..measure.datasets import file_hash

        return file_hash(self.path / MODEL)


def save_bundle(path: str | Path, model, contract: Contract, metrics: dict, config: TrainConfig, info: dict,
                log_csv: str | Path | None = None) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save(path / MODEL)
    (path / "contract.json").write_text(contract.to_json())
    (path / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (path / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    if log_csv and Path(log_csv) != path / "train_log.csv":
        shutil.copy(log_csv, path / "train_log.csv")
    (path / MARKER).write_text(json.dumps({"medlite_version": __version__, **info}, indent=1))
    return path


def load_bundle(path: str | Path) -> Bundle:
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: not a bundle folder (no such folder); make one with `medlite train`")
    missing = [n for n in (MARKER, MODEL, "contract.json", "metrics.json", "config.yaml") if not (path / n).exists()]
    if missing:
        raise BundleError(f"{path}: not a medlite bundle (missing {', '.join(missing)}); make one with "
                          "`medlite train --out DIR`")
    try:
        info = json.loads((path / MARKER).read_text())
        contract = Contract.from_dict(json.loads((path / "contract.json").read_text()), str(path / "contract.json"))
        metrics = json.loads((path / "metrics.json").read_text())
        config = TrainConfig().updated(**yaml.safe_load((path / "config.yaml").read_text()))
    except (json.JSONDecodeError, yaml.YAMLError, TypeError, ValueError) as e:
        raise BundleError(f"{path}: a bundle file is damaged ({e})") from None
    try:
        model = keras.models.load_model(path / MODEL, compile=False)
    except Exception as e:
        raise BundleError(f"{path / MODEL}: the Keras model could not be loaded ({type(e).__name__}: {e})") from None
    return Bundle(path, model, contract, metrics, config, info)
