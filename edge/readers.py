"""Readers: any supported file (DICOM, PNG, JPEG, TIFF, .npy) or array to display frames."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .backends.litert import quiet, quiet_stderr
from .contract import IntendedUse, Preprocess
from .errors import InputError
from .frames import Frame

# OpenCV's codecs print their own complaints (libtiff's "TIFFReadDirectory: ...") on standard error; medlite's
# error for the file already says what is wrong, so OpenCV stays silent unless the user asked for --verbose.
if quiet():
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
DICOM_SUFFIXES = {".dcm", ".dicom", ""}
SUFFIXES = RASTER_SUFFIXES | {".dcm", ".dicom", ".npy"}


def read(source, pre: Preprocess | None = None, intended: IntendedUse | None = None,
         size: tuple[int, int] | None = None) -> list[Frame]:
    """Frames from a path or an array (HxW or HxWxC display values), following the frame policy.

    With ``intended``, a DICOM outside the model's intended use raises Rejected (other files carry no tags).
    With ``size`` (the model's input height and width), a JPEG 2000 DICOM may be decoded at reduced resolution."""
    pre = pre or Preprocess()
    if isinstance(source, Frame):
        return [source]
    if isinstance(source, np.ndarray):
        return [Frame(to_display(source, None))]
    path = os.fspath(source)
    if not os.path.exists(path):
        raise InputError(path, "no such file")
    if os.path.isdir(path):
        raise InputError(path, "is a folder; pass the files in it (the CLI walks folders)")
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as e:
            raise InputError(path, f"not a readable .npy array ({e})") from None
        return [Frame(to_display(arr, path), file=path)]
    if suffix in RASTER_SUFFIXES:
        return [Frame(_read_raster(path), file=path)]
    if is_dicom(path):
        from .dicom import read_dicom  # pydicom is imported only when a DICOM is read

        return read_dicom(path, pre, intended, size)
    raise InputError(path, f"unsupported file type {suffix!r}; medlite reads {', '.join(sorted(SUFFIXES))}")


def is_dicom(path: str) -> bool:
    """Whether ``path`` is a file read as DICOM: by its suffix (often none), else by the 'DICM' marker."""
    if not os.path.isfile(path):
        return False
    suffix = Path(path).suffix.lower()
    return suffix in DICOM_SUFFIXES or (suffix not in RASTER_SUFFIXES | {".npy"} and _has_dicom_marker(path))


def _has_dicom_marker(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM"


def _read_raster(path: str) -> np.ndarray:
    with quiet_stderr(quiet()):  # libpng and libjpeg print their complaints on standard error themselves
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(path, "not a readable image (OpenCV could not decode it as PNG, JPEG or TIFF); "
                               "the file may be truncated or of another type")
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return to_display(img, path)


def to_display(arr: np.ndarray, file: str | None) -> np.ndarray:
    """HxW or HxWxC array to float32 display values 0..255 with 1 or 3 channels.

    8-bit data is taken as is; deeper or float data (16-bit TIFF, .npy) is
    stretched min-max, the same policy as a DICOM without a window.
    """
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise InputError(file, f"an image must be HxW, HxWx1 or HxWx3; got an array of shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32)
    if not np.issubdtype(arr.dtype, np.number):
        raise InputError(file, f"pixel type {arr.dtype} is not numeric")
    arr = arr.astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if not np.isfinite([lo, hi]).all():
        raise InputError(file, "the image holds NaN or infinite values")
    return (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
