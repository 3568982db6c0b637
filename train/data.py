"""Training data: MedMNIST .npz files and class folders, through medlite.edge's readers and preprocessing."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..edge.contract import InputSpec, IntendedUse, Preprocess
from ..edge.errors import DataError, MedliteError
from ..edge.heatmap import region
from ..edge.preprocess import prepare, prepare_batch
from ..edge.readers import SUFFIXES, read
from ..measure import datasets


@dataclass(frozen=True)
class Arrays:
    x: np.ndarray  # N x H x W x C float32 model input
    y: np.ndarray  # N int class indices
    # N x H x W float32: each image's finding (its lesion masks' union: 1 inside) as the input crops and scales
    # it; NaN where no mask is known. None: no masks at all.
    masks: np.ndarray | None = None

    @property
    def with_mask(self) -> np.ndarray:
        """Which images have a known mask (none, without masks)."""
        return np.zeros(len(self.y), bool) if self.masks is None else ~np.isnan(self.masks).any(axis=(1, 2))

    def take(self, idx) -> "Arrays":
        return Arrays(self.x[idx], self.y[idx], None if self.masks is None else self.masks[idx])

    @staticmethod
    def joined(parts: list["Arrays"]) -> "Arrays":
        masks = None if any(a.masks is None for a in parts) else np.concatenate([a.masks for a in parts])
        return Arrays(np.concatenate([a.x for a in parts]), np.concatenate([a.y for a in parts]), masks)


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
                       val_fraction: float = 0.1, seed: int = 0, masks: str | Path | None = None,
                       crop: str = "center") -> TrainingData:
    """Load ``source`` (a MedMNIST name, an .npz path or a class folder) as model inputs; with ``masks``, a
    folder laid out as the class folder's training images are, the findings' masks of those images
    (``find_masks``)."""
    path = datasets.find(source, data_dir)
    if masks is not None and not Path(masks).is_dir():
        raise DataError(f"{masks}: not a folder of masks")
    if path.is_dir():
        return _from_folder(path, image_size, color, val_fraction, seed, None if masks is None else Path(masks),
                            crop)
    if masks is not None:
        raise DataError(f"{source}: masks go with a class folder of images, not a MedMNIST file")
    ds = datasets.load_npz(path)
    h, w = ds.image_size
    spec = InputSpec(height=h, width=w, channels=ds.channels)
    pre = Preprocess(color="grey" if ds.channels == 1 else "rgb", mean=(0.0,), std=(1.0,))
    splits = {name: Arrays(prepare_batch(s.images, pre, spec), s.labels) for name, s in ds.splits.items()}
    if "val" not in splits:
        keep, held = stratified_split(splits["train"].y, val_fraction, seed)
        splits["train"], splits["val"] = splits["train"].take(keep), splits["train"].take(held)
    modalities, body_parts, words, ages = datasets.INTENDED_USE.get(ds.name, ((), (), "", None))
    return TrainingData(ds.name, ds.sha256, ds.label_names, spec, pre, splits,
                        intended_use=IntendedUse(modalities, body_parts, words, ages))


def _from_folder(root: Path, image_size: int, color: str, val_fraction: float, seed: int,
                 masks_dir: Path | None = None, crop: str = "center") -> TrainingData:
    """A folder with one subfolder per class (optionally under train/, val/, test/); the training images'
    masks from ``masks_dir`` (never a test split's)."""
    split_dirs = {s: root / s for s in datasets.SPLITS if (root / s).is_dir()}
    if "train" not in split_dirs:
        split_dirs = {"train": root}
    classes = sorted(d.name for d in split_dirs["train"].iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{root}: a class folder needs at least two subfolders, one per class "
                        f"(found {classes or 'none'})")
    spec = InputSpec(height=image_size, width=image_size, channels=1 if color == "grey" else 3)
    pre = Preprocess(color=color, crop=crop)
    splits, skipped, digests, tags, ages = {}, [], [], set(), []
    for split, folder in split_dirs.items():
        xs, ys, ms = [], [], []
        with_masks = masks_dir is not None and split != "test"
        for k, cls in enumerate(classes):
            for f in sorted((folder / cls).rglob("*")) if (folder / cls).is_dir() else []:
                if not f.is_file() or (f.suffix.lower() not in SUFFIXES and f.suffix):
                    continue
                try:
                    # Decoded as the cart decodes it (a JPEG 2000 at its reduced level), so that training and
                    # the cart see the same input, to the bit.
                    frames = list(read(str(f), pre, size=(image_size, image_size)))
                    mask = None  # a cine's frames have none
                    if with_masks and len(frames) == 1:
                        mask = find_masks(masks_dir / f.relative_to(folder), frames[0].pixels.shape[:2], pre, spec)
                    for frame in frames:
                        xs.append(prepare(frame.pixels, pre, spec, str(f)))
                        ys.append(k)
                        ms.append(np.full((spec.height, spec.width), np.nan, np.float32) if mask is None else mask)
                        tags.add((frame.modality, frame.body_part, frame.view_position))
                        ages.append(frame.age_years)
                except MedliteError as e:
                    skipped.append(str(e))
                    continue
                digests.append(hashlib.sha256(f.read_bytes()).hexdigest())
        if xs:
            splits[split] = Arrays(np.stack(xs), np.asarray(ys, dtype=np.int64), np.stack(ms) if with_masks else None)
    if "train" not in splits:
        raise DataError(f"{root}: no readable images in the class folders ({len(skipped)} failed)")
    if "val" not in splits:
        keep, held = stratified_split(splits["train"].y, val_fraction, seed)
        splits["train"], splits["val"] = splits["train"].take(keep), splits["train"].take(held)
    sha = hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()
    return TrainingData(os.path.basename(os.path.abspath(root)), sha, tuple(classes), spec, pre, splits,
                        tuple(skipped), intended_use_of(tags, ages))


def find_masks(image: Path, size: tuple[int, int], pre: Preprocess, spec: InputSpec) -> np.ndarray | None:
    """The finding's mask of the image at ``image`` (its path under the masks folder): the union of
    ``NAME_mask*.png`` beside it (BUSI's layout: an empty mask for an image without a finding), cropped and
    scaled as the image is, 1 inside; None when there is none."""
    files = sorted(image.parent.glob(f"{image.stem}_mask*.png"))
    if not files:
        return None
    union = np.zeros(size, np.float32)
    for f in files:
        m = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if m is None or m.shape != size:
            found = "unreadable" if m is None else f"{m.shape[1]}x{m.shape[0]}"
            raise DataError(f"{f}: not a mask of its image ({found}, the image is {size[1]}x{size[0]})")
        union = np.maximum(union, (m > 0).astype(np.float32))
    top, left, rows, cols = region(size[0], size[1], pre.crop)
    return cv2.resize(union[top:top + rows, left:left + cols], (spec.width, spec.height), interpolation=cv2.INTER_AREA)


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
