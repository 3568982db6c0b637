"""Labelled image sets in MedMNIST's .npz format: found by name or path, checked, downloaded only as a last resort.

Search order for a name such as ``pneumoniamnist``: ``--data-dir``, then
``$MEDLITE_DATA_DIR``, then the user cache (``$XDG_CACHE_HOME/medlite`` or
``~/.cache/medlite``); only then, for a known MedMNIST name and unless
``MEDLITE_OFFLINE=1``, the official file is downloaded into the cache and its
published MD5 verified.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..edge.errors import DataError

# MedMNIST v2 2D files (Zenodo record 6496656): published MD5 and label names. Multi-label ChestMNIST is
# left out: medlite classifies one label per image.
MEDMNIST_URL = "https://zenodo.org/records/6496656/files/{name}.npz?download=1"
MEDMNIST = {
    "pneumoniamnist": ("28209eda62fecd6e6a2d98b1501bb15f", ("normal", "pneumonia")),
    "breastmnist": ("750601b1f35ba3300ea97c75c52ff8f6", ("malignant", "normal, benign")),
    "pathmnist": ("a8b06965200029087d5bd730944a56c1", ("adipose", "background", "debris", "lymphocytes", "mucus",
                  "smooth muscle", "normal colon mucosa", "cancer-associated stroma",
                  "colorectal adenocarcinoma epithelium")),
    "dermamnist": ("0744692d530f8e62ec473284d019b0c7", ("actinic keratoses and intraepithelial carcinoma",
                   "basal cell carcinoma", "benign keratosis-like lesions", "dermatofibroma", "melanoma",
                   "melanocytic nevi", "vascular lesions")),
    "octmnist": ("c68d92d5b585d8d81f7112f81e2d0842", ("choroidal neovascularization", "diabetic macular edema",
                 "drusen", "normal")),
    "retinamnist": ("bd4c0672f1bba3e3a89f0e4e876791e4", ("0", "1", "2", "3", "4")),
    "bloodmnist": ("7053d0359d879ad8a5505303e11de1dc", ("basophil", "eosinophil", "erythroblast",
                   "immature granulocytes", "lymphocyte", "monocyte", "neutrophil", "platelet")),
    "tissuemnist": ("ebe78ee8b05294063de985d821c1c34b", ("Collecting Duct, Connecting Tubule",
                    "Distal Convoluted Tubule", "Glomerular endothelial cells", "Interstitial endothelial cells",
                    "Leukocytes", "Podocytes", "Proximal Tubule Segments", "Thick Ascending Limb")),
    "organamnist": ("866b832ed4eeba67bfb9edee1d5544e6", None),
    "organcmnist": ("0afa5834fb105f7705a7d93372119a21", None),
    "organsmnist": ("e5c39f1af030238290b9557d9503af9d", None),
}
# The clinically positive class of the binary MedMNIST sets: what a "positive" decision means, and so the class
# an operating point's sensitivity protects.
POSITIVE_CLASS = {"pneumoniamnist": "pneumonia", "breastmnist": "malignant"}
# What each MedMNIST set's images are, as DICOM would say it: (modalities, body parts, in words, the patients'
# ages in years or None). A model trained on one carries this as its intended use. Ages from the source
# publications: PneumoniaMNIST's chest X-rays are of children aged one to five (Kermany et al., Cell 2018);
# BreastMNIST's ultrasound of women aged 25 to 75 (Al-Dhabyani et al., Data in Brief 2020). The others' sources
# give no range that medlite could check, so they carry none.
INTENDED_USE = {
    "pneumoniamnist": (("CR", "DX"), ("CHEST",), "paediatric chest X-ray", (1.0, 5.0)),
    "breastmnist": (("US",), ("BREAST",), "breast ultrasound", (25.0, 75.0)),
    "pathmnist": (("SM",), (), "colorectal cancer histology", None),
    "dermamnist": (("XC",), ("SKIN",), "dermatoscopy of pigmented skin lesions", None),
    "octmnist": (("OPT",), ("EYE",), "retinal optical coherence tomography", None),
    "retinamnist": (("OP",), ("EYE",), "retinal fundus photography", None),
    "bloodmnist": (("SM",), (), "blood cell microscopy", None),
    "tissuemnist": (("SM",), ("KIDNEY",), "kidney cortex microscopy", None),
    "organamnist": (("CT",), ("ABDOMEN",), "abdominal CT, axial slices", None),
    "organcmnist": (("CT",), ("ABDOMEN",), "abdominal CT, coronal slices", None),
    "organsmnist": (("CT",), ("ABDOMEN",), "abdominal CT, sagittal slices", None),
}
_ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
           "lung-right", "pancreas", "spleen")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # N x H x W (grey) or N x H x W x 3, uint8
    labels: np.ndarray  # N, int class indices


@dataclass(frozen=True)
class Dataset:
    name: str
    path: str
    sha256: str
    label_names: tuple[str, ...]
    splits: dict[str, Split]

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    @property
    def channels(self) -> int:
        return 1 if self.splits["train"].images.ndim == 3 else self.splits["train"].images.shape[3]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.splits["train"].images.shape[1:3])


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "medlite"


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """Where a named data set is looked for, in order, with where each place came from."""
    places = []
    if data_dir:
        places.append(("--data-dir", Path(data_dir)))
    if os.environ.get("MEDLITE_DATA_DIR"):
        places.append(("$MEDLITE_DATA_DIR", Path(os.environ["MEDLITE_DATA_DIR"])))
    places.append(("user cache", cache_dir()))
    return places


def find(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Path:
    """The data file for a path or a MedMNIST name; downloads a known name only when nothing is found."""
    given = Path(name_or_path)
    if given.exists():
        return given
    if given.parent != Path(".") or given.is_absolute():
        raise DataError(f"{given}: no such data file or folder")
    filename = given.name if given.suffix == ".npz" else given.name + ".npz"
    places = search_dirs(data_dir)
    for _, folder in places:
        if (folder / filename).exists():
            return folder / filename
    name = filename[: -len(".npz")].lower()
    looked = "; ".join(f"{folder / filename} ({why})" for why, folder in places)
    if name in MEDMNIST and os.environ.get("MEDLITE_OFFLINE") != "1":
        try:
            return download(name)
        except (urllib.error.URLError, OSError) as e:
            raise DataError(f"data set {name!r} not found (looked in: {looked}) and the download of the "
                            f"official file failed ({e}). Offline: copy {filename} into one of those places, "
                            "or pass --data /path/to/file.npz or --data-dir DIR, or set MEDLITE_DATA_DIR") from None
    if name in MEDMNIST:
        hint = f" and downloads are off (MEDLITE_OFFLINE=1). Offline: copy {filename} into one of those places, or"
    else:
        hint = f" ({name!r} is not a known MedMNIST name, so nothing was downloaded). Otherwise"
    raise DataError(f"data set {str(name_or_path)!r} not found; looked in: {looked}{hint} pass --data "
                    "/path/to/file.npz or a class folder, --data-dir DIR, or set MEDLITE_DATA_DIR")


def download(name: str) -> Path:
    """Fetch an official MedMNIST file into the cache and verify its published MD5."""
    md5, _ = MEDMNIST[name]
    target = cache_dir() / f"{name}.npz"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".npz.part")
    with urllib.request.urlopen(MEDMNIST_URL.format(name=name), timeout=60) as response, open(partial, "wb") as f:
        while chunk := response.read(1 << 20):
            f.write(chunk)
    got = file_hash(partial, "md5")
    if got != md5:
        partial.unlink()
        raise DataError(f"downloaded {name}.npz has MD5 {got}, not the published {md5}; nothing was kept")
    partial.replace(target)
    return target


def file_hash(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def load(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a MedMNIST-format .npz by name or path (see ``find`` for the search order)."""
    path = find(name_or_path, data_dir)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; class folders are read by medlite.train (`medlite train`)")
    return load_npz(path)


def load_npz(path: str | os.PathLike) -> Dataset:
    """Read and check a MedMNIST-format file: ``{train,val,test}_{images,labels}``, val optional."""
    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    with npz:
        keys = set(npz.files)
        required = {"train_images", "train_labels", "test_images", "test_labels"}
        if not required <= keys:
            raise DataError(f"{path}: not a MedMNIST-format file: missing {', '.join(sorted(required - keys))} "
                            f"(it has {', '.join(sorted(keys)) or 'no arrays'}); expected train_images, "
                            "train_labels, val_images, val_labels (optional), test_images, test_labels")
        splits = {s: _split(npz, s, path) for s in SPLITS if f"{s}_images" in keys}
    name = path.stem.lower()
    labelled = [s.labels for s in splits.values() if len(s.labels)]  # a split may be empty (a test set alone)
    if not labelled:
        raise DataError(f"{path}: every split is empty: no images to train or measure on")
    n_classes = int(max(labels.max() for labels in labelled)) + 1
    known = MEDMNIST.get(name, (None, None))[1] or (_ORGANS if name.startswith("organ") else None)
    label_names = known if known and len(known) == n_classes else tuple(f"class_{i}" for i in range(n_classes))
    return Dataset(name, str(path), file_hash(path), tuple(label_names), splits)


def _split(npz, split: str, path: Path) -> Split:
    if f"{split}_labels" not in npz.files:
        raise DataError(f"{path}: has {split}_images but no {split}_labels")
    images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3)):
        raise DataError(f"{path}: {split}_images must be uint8 N x H x W or N x H x W x 3, got "
                        f"{images.dtype} {images.shape}")
    if images.ndim == 4 and images.shape[3] == 1:
        images = images[..., 0]
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise DataError(f"{path}: {split}_labels has {labels.shape[1]} columns: a multi-label set, which medlite "
                        "does not support (one class per image)")
    labels = labels.reshape(-1)
    if len(labels) != len(images):
        raise DataError(f"{path}: {split} has {len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or not np.issubdtype(labels.dtype, np.integer)):
        raise DataError(f"{path}: {split}_labels must be non-negative integer class indices")
    return Split(images, labels.astype(np.int64))
