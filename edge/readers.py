"""Readers: any supported file (DICOM, PNG, JPEG, TIFF, .npy) or array to display frames."""

from __future__ import annotations

import io
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
         size: tuple[int, int] | None = None, data: bytes | None = None) -> list[Frame]:
    """Frames from a path or an array (HxW or HxWxC display values), following the frame policy.

    With ``intended``, a DICOM outside the model's intended use raises Rejected (other files carry no tags).
    With ``size`` (the model's input height and width), a JPEG 2000 DICOM may be decoded at reduced resolution.
    With ``data``, the file's bytes already read (from an object store, by Ray Data): ``source`` then only
    names the file. Either way a file is decoded from its bytes, by the same code."""
    pre = pre or Preprocess()
    if isinstance(source, Frame):
        return [source]
    if isinstance(source, np.ndarray):
        return [Frame(to_display(source, None))]
    path = os.fspath(source)
    if data is None:
        data = _read_file(path)
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as e:
            raise InputError(path, f"not a readable .npy array ({e})") from None
        return [Frame(to_display(arr, path), file=path)]
    if suffix in RASTER_SUFFIXES:
        return [Frame(_read_raster(path, data), file=path)]
    if is_dicom(path, data):
        from .dicom import dicom_frames, open_dicom  # pydicom is imported only when a DICOM is read

        return dicom_frames(open_dicom(path, data), path, pre, intended, size)
    raise InputError(path, f"unsupported file type {suffix!r}; medlite reads {', '.join(sorted(SUFFIXES))}")


def _read_file(path: str) -> bytes:
    if not os.path.exists(path):
        raise InputError(path, "no such file")
    if os.path.isdir(path):
        raise InputError(path, "is a folder; pass the files in it (the CLI walks folders)")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise InputError(path, f"cannot be read ({e.strerror or e})") from None


def is_dicom(path: str, data: bytes | None = None) -> bool:
    """Whether ``path`` (a file, or the name of ``data``) is read as DICOM: by its suffix (often none), else by
    the 'DICM' marker."""
    if data is None and not os.path.isfile(path):
        return False
    suffix = Path(path).suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return True
    if suffix in RASTER_SUFFIXES | {".npy"}:
        return False
    return (data[128:132] if data is not None else _head(path)) == b"DICM"


def _head(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(132)[128:132]


def _read_raster(path: str, data: bytes) -> np.ndarray:
    with quiet_stderr(quiet()):  # libpng and libjpeg print their complaints on standard error themselves
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
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
