"""Training data: MedMNIST .npz files and class folders, through medlite.edge's readers and preprocessing."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..edge.contract import InputSpec, IntendedUse, Preprocess
from ..edge.errors import DataError, MedliteError
from ..edge.preprocess import prepare, prepare_batch
from ..edge.readers import SUFFIXES, read
from ..measure import datasets


@dataclass(frozen=True)
class Arrays:
    x: np.ndarray  # N x H x W x C float32 model input
    y: np.ndarray  # N int class indices


@dataclass(frozen=True)
class TrainingData:
    name: str
    sha256: str  # of the data file, or of the sorted file hashes of a class folder
    label_names: tuple[str, ...]
    spec: InputSpec
    preprocess: Preprocess
    splits: dict[str, Arrays]  # train, val and (when the source has one) test
    skipped: tuple[str, ...] = ()  # class-folder files that could not be read, with the reason
    intended_use: IntendedUse = IntendedUse()  # what the images are: the DICOMs' own tags, or the MedMNIST table


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with each class's share of ``fraction`` held out, at least one per class."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held = []
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        rng.shuffle(idx)
        n = max(1, int(round(len(idx) * fraction))) if len(idx) > 1 else 0
        held.append(idx[:n])
    held_out = np.sort(np.concatenate(held))
    keep = np.setdiff1d(np.arange(len(y)), held_out)
    return keep, held_out


def load_training_data(source: str, *, data_dir=None, image_size: int = 28, color: str = "grey",
                       val_fraction: float = 0.1, seed: int = 0) -> TrainingData:
    """Load ``source`` (a MedMNIST name, an .npz path or a class folder) as model inputs."""
    path = datasets.find(source, data_dir)
    if path.is_dir():
        return _from_folder(path, image_size, color, val_fraction, seed)
    ds = datasets.load_npz(path)
    h, w = ds.image_size
    spec = InputSpec(height=h, width=w, channels=ds.channels)
    pre = Preprocess(color="grey" if ds.channels == 1 else "rgb", mean=(0.0,), std=(1.0,))
    splits = {name: Arrays(prepare_batch(s.images, pre, spec), s.labels) for name, s in ds.splits.items()}
    if "val" not in splits:
        keep, held = stratified_split(splits["train"].y, val_fraction, seed)
        tr = splits["train"]
        splits["train"], splits["val"] = Arrays(tr.x[keep], tr.y[keep]), Arrays(tr.x[held], tr.y[held])
    modalities, body_parts, words, ages = datasets.INTENDED_USE.get(ds.name, ((), (), "", None))
    return TrainingData(ds.name, ds.sha256, ds.label_names, spec, pre, splits,
                        intended_use=IntendedUse(modalities, body_parts, words, ages))


def _from_folder(root: Path, image_size: int, color: str, val_fraction: float, seed: int) -> TrainingData:
    """A folder with one subfolder per class (optionally under train/, val/, test/)."""
    split_dirs = {s: root / s for s in datasets.SPLITS if (root / s).is_dir()}
    if "train" not in split_dirs:
        split_dirs = {"train": root}
    classes = sorted(d.name for d in split_dirs["train"].iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{root}: a class folder needs at least two subfolders, one per class "
                        f"(found {classes or 'none'})")
    spec = InputSpec(height=image_size, width=image_size, channels=1 if color == "grey" else 3)
    pre = Preprocess(color=color)
    splits, skipped, digests, tags, ages = {}, [], [], set(), []
    for split, folder in split_dirs.items():
        xs, ys = [], []
        for k, cls in enumerate(classes):
            for f in sorted((folder / cls).rglob("*")) if (folder / cls).is_dir() else []:
                if not f.is_file() or (f.suffix.lower() not in SUFFIXES and f.suffix):
                    continue
                try:
                    # Decoded as the cart decodes it (a JPEG 2000 at its reduced level), so that training and
                    # the cart see the same input, to the bit.
                    for frame in read(str(f), pre, size=(image_size, image_size)):
                        xs.append(prepare(frame.pixels, pre, spec, str(f)))
                        ys.append(k)
                        tags.add((frame.modality, frame.body_part, frame.view_position))
                        ages.append(frame.age_years)
                except MedliteError as e:
                    skipped.append(str(e))
                    continue
                digests.append(hashlib.sha256(f.read_bytes()).hexdigest())
        if xs:
            splits[split] = Arrays(np.stack(xs), np.asarray(ys, dtype=np.int64))
    if "train" not in splits:
        raise DataError(f"{root}: no readable images in the class folders ({len(skipped)} failed)")
    if "val" not in splits:
        keep, held = stratified_split(splits["train"].y, val_fraction, seed)
        tr = splits["train"]
        splits["train"], splits["val"] = Arrays(tr.x[keep], tr.y[keep]), Arrays(tr.x[held], tr.y[held])
    sha = hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()
    return TrainingData(os.path.basename(os.path.abspath(root)), sha, tuple(classes), spec, pre, splits,
                        tuple(skipped), intended_use_of(tags, ages))


def unlabelled_images(folders, spec: InputSpec, pre: Preprocess) -> tuple[np.ndarray, list[str]]:
    """Every readable image or DICOM under ``folders`` (searched recursively, no labels) as model inputs, and
    the files that could not be read, with the reason."""
    xs, skipped = [], []
    for root in map(Path, folders):
        if not root.is_dir():
            raise DataError(f"{root}: not a folder of images")
        for f in sorted(root.rglob("*")):
            if not f.is_file() or f.name.startswith(".") or (f.suffix.lower() not in SUFFIXES and f.suffix):
                continue
            try:
                xs.extend(prepare(frame.pixels, pre, spec, str(f))
                          for frame in read(str(f), pre, size=(spec.height, spec.width)))
            except MedliteError as e:
                skipped.append(str(e))
    if not xs:
        raise DataError(f"{', '.join(map(str, folders))}: no readable images ({len(skipped)} failed)")
    return np.stack(xs), skipped


def intended_use_of(tags: set, ages: list[float | None] = ()) -> IntendedUse:
    """The intended use that training DICOMs' (modality, body part, view position) tags and patients' ages show.
    A rule is kept only when every image had the tag: a folder that mixes DICOMs with PNGs, or DICOMs without
    the tag, says nothing of it. The age range is the youngest to the oldest training patient."""
    def rule(values: set) -> tuple[str, ...]:
        return tuple(sorted(v.upper() for v in values)) if values and None not in values else ()

    known = ages and None not in ages
    return IntendedUse(rule({t[0] for t in tags}), rule({t[1] for t in tags}),
                       age_years=(min(ages), max(ages)) if known else None,
                       view_positions=rule({t[2] for t in tags}))
