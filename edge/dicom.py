"""DICOM to display pixels: modality rescale, VOI window or LUT, MONOCHROME1, colour ultrasound, cine frames.

Patient name, ID and birth date are never read into anything medlite returns or
prints: a DICOM is identified by its file name and SOP Instance UID only.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import logging
import re
import warnings

import numpy as np
import pydicom
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder, pixel_array

from .contract import IntendedUse, Preprocess
from .errors import InputError, Rejected
from .frames import Frame
from .jpeg2000 import J2K_SYNTAXES, decode_reduced, reducible
from .truncation import truncation_of

# pydicom also logs those warnings, values included, through its logger.
logging.getLogger("pydicom").setLevel(logging.ERROR)

GREY = ("MONOCHROME1", "MONOCHROME2")
# pydicom returns these as RGB (YBR_FULL* converted, YBR_RCT/ICT decoded to RGB by the JPEG 2000 codec).
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT")
PALETTE = "PALETTE COLOR"
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
CODE_STRING = re.compile(r"^[A-Z0-9 _]{0,16}$")  # DICOM PS3.5 6.2, VR CS
UID_OR_NAME = re.compile(r"^[A-Za-z0-9 .,()\-]{1,80}$")  # a SOP class's UID or pydicom's name for it


@contextlib.contextmanager
def quiet_pydicom():
    """pydicom's warnings about malformed elements quote their values (a patient's name among them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def dicom_frames(ds: pydicom.Dataset, path: str, pre: Preprocess, intended: IntendedUse | None = None,
                 size: tuple[int, int] | None = None) -> list[Frame]:
    """Decode a DICOM opened by ``open_dicom`` into frames chosen by the contract's frame policy.

    With ``size``, the model's input height and width, a greyscale JPEG 2000 frame is decoded at the smallest
    resolution level still at least that large (``prepare`` then resizes it as it would the full image).
    With ``intended``, a file whose tags are outside the model's intended use raises Rejected before
    its pixels are decoded. pydicom's warnings about malformed elements quote their values (a patient's name
    among them), so none reaches the console or a log: what matters arrives as medlite's own error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _dicom_frames(ds, path, pre, intended, size)


def _dicom_frames(ds: pydicom.Dataset, path: str, pre: Preprocess, intended: IntendedUse | None,
                  size: tuple[int, int] | None) -> list[Frame]:
    uid = str(ds.get("SOPInstanceUID", "")) or None
    modality, body_part, view = (_code(ds, k, path) for k in ("Modality", "BodyPartExamined", "ViewPosition"))
    reason = intended.violation(modality, body_part, view) if intended else None
    if reason:
        raise Rejected(path, reason)
    if not any(k in ds for k in PIXEL_KEYWORDS):
        sop = getattr(ds.get("SOPClassUID"), "name", None)
        sop = sop if sop and UID_OR_NAME.match(sop) else None
        if sop is None or "Image Storage" in sop:  # an image's header that stops before its pixels
            raise InputError(path, f"this DICOM has no pixel data ({sop or 'no SOP class'}, modality "
                                   f"{modality or '?'}), though it is to be an image: it may be truncated (an "
                                   "interrupted copy or transfer?); send it again")
        raise InputError(path, f"this DICOM has no pixel data ({sop}, modality {modality or '?'}); "
                               "it is not an image, so there is nothing to classify")
    age = patient_age_years(ds)  # checked once the file is known to be an image
    reason = intended.age_violation(age) if intended else None
    if reason:
        raise Rejected(path, reason)
    # Answered without an age check: the intended use names ages, and this file gives none.
    unchecked_age = intended is not None and intended.age_years is not None and age is None
    photometric = _code(ds, "PhotometricInterpretation", path) or ""
    if photometric not in GREY + COLOUR + (PALETTE,):
        raise InputError(path, f"photometric interpretation {photometric or '(missing)'!r} is not supported; "
                               f"medlite reads {', '.join(GREY + COLOUR + (PALETTE,))}")
    _check_decoder(ds, path)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    indices = _frame_indices(pre.frames, n_frames, path)
    try:
        reduced = _reduced(ds, pre, size) if n_frames == 1 and photometric in GREY else None
        if reduced is not None:
            arr = reduced[None]
        elif n_frames > 1 and len(indices) < n_frames:
            # A cine's chosen frames alone: pydicom decodes one frame by index (3 ms against 150 ms for all 30
            # of a 240x320 JPEG cine, the same pixels).
            arr = {i: pixel_array(ds, index=i) for i in indices}
        else:
            arr = ds.pixel_array
            arr = arr[None] if n_frames == 1 else arr
    except ImportError as e:  # the install is what is wrong, not the file
        raise InputError(path, f"the decoder for this file needs the Python module {e.name!r}, which is not "
                               "installed; reinstall medlite with its dependencies") from None
    except Exception as e:  # decoders raise many types; the file is what is wrong
        raise InputError(path, f"the pixel data could not be decoded ({type(e).__name__}); "
                               "the file may be truncated or corrupt") from None
    frames = []
    for i in indices:
        pixels = _to_display(arr[i], ds, photometric, pre)
        frames.append(Frame(pixels, file=path, frame=i if n_frames > 1 else None, sop_instance_uid=uid,
                            size=(int(ds.Rows), int(ds.Columns)), modality=modality, body_part=body_part,
                            view_position=view, age_years=age, age_unchecked=unchecked_age))
    return frames


AGE_UNITS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}  # DICOM Age String (AS) units, in years
AGE_STRING = re.compile(r"^(\d{1,3})([DWMY]?)$")


def patient_age_years(ds: pydicom.Dataset) -> float | None:
    """The patient's age at the examination, in years: PatientAge (AS, "004Y", "018M"; a bare number is
    years), else PatientBirthDate and the StudyDate or AcquisitionDate; None when the file gives neither.
    Only the age is kept: the birth date itself never leaves this function."""
    try:
        text = str(ds.get("PatientAge", "") or "").strip().upper()
        match = AGE_STRING.match(text)
        if match:
            return int(match.group(1)) * AGE_UNITS[match.group(2) or "Y"]
        born = _date(ds.get("PatientBirthDate"))
        seen = _date(ds.get("StudyDate")) or _date(ds.get("AcquisitionDate"))
    except Exception:  # a damaged element: as if the file gave no age
        return None
    if born is None or seen is None or seen < born:
        return None
    return (seen - born).days / 365.25


def _date(value) -> datetime.date | None:
    text = str(value or "").strip()
    try:
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8])) if len(text) == 8 else None
    except ValueError:
        return None


def _reduced(ds: pydicom.Dataset, pre: Preprocess, size: tuple[int, int] | None) -> np.ndarray | None:
    """A JPEG 2000 frame at reduced resolution, or None where full decoding is needed."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if size is None or ts not in J2K_SYNTAXES:
        return None
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    cs = reducible(ds, frame)
    if cs is None:
        return None
    # A centre crop keeps a square of the shorter side, which must still cover the input's larger side.
    need = (max(size),) * 2 if pre.crop == "center" else size
    level = cs.level_for(*need)
    return decode_reduced(frame, cs, level) if level > 0 else None


def _code(ds: pydicom.Dataset, keyword: str, path: str) -> str | None:
    """A Code String tag's value, or None when absent. A value that is no code string means a damaged header:
    it is never echoed, since it may run on into other elements (a patient's name among them)."""
    try:
        value = ds.get(keyword)
    except Exception:  # pydicom converts values lazily, and a damaged element fails there
        value = "\x00"
    if value is None:
        return None
    text = str(value).strip()
    if not CODE_STRING.match(text):
        raise InputError(path, f"the {keyword} element holds no valid DICOM code string ({len(text)} characters); "
                               "the file's header is damaged: re-export it from the modality or PACS")
    return text or None


# What a report takes from its image: the Patient and General Study modules (edge/sr.py writes their type 2
# attributes, possibly empty, as DICOM requires) and the image's identity.
PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                 "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")
IDENTITY = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "OtherPatientIDsSequence", "IssuerOfPatientID")
# What a heatmap as a Segmentation (edge/segmentation.py) also needs of its image: its pixel matrix and geometry.
IMAGE = ("Modality", "Rows", "Columns", "NumberOfFrames", "PatientOrientation", "Laterality", "FrameOfReferenceUID")


def report_header(ds: pydicom.Dataset) -> pydicom.Dataset | None:
    """The elements of an image's header that a report about it carries (patient, study, the image's
    identity) and that its heatmap objects need (its pixel matrix), read from the dataset already parsed for its
    pixels; None when they cannot be read."""
    out = pydicom.Dataset()
    try:
        with quiet_pydicom():
            for k in PATIENT_STUDY + IDENTITY + IMAGE:
                if k in ds:
                    setattr(out, k, ds[k].value)
    except Exception:  # a damaged element: no report can be made from this header
        return None
    return out


# The type 2 attributes of the Patient and General Study modules: present, possibly empty, as DICOM requires (a
# modality may have left some out).
TYPE2 = frozenset(PATIENT_STUDY) - {"StudyInstanceUID"}


def derived_header(source: pydicom.Dataset) -> pydicom.Dataset:
    """What an object medlite makes of an image (its report, its heatmap picture) takes from the image's header:
    patient, study and the image's identity, with the type 2 attributes a modality left out present and empty.
    highdicom copies the whole dataset it is given, and a modality's header with its private elements made that
    most of a report's cost."""
    ds = pydicom.Dataset()
    for k in PATIENT_STUDY + IDENTITY:
        if k in source:
            setattr(ds, k, source[k].value)
        elif k in TYPE2:
            setattr(ds, k, "")
    return ds


def open_dicom(path: str, data: bytes | None = None) -> pydicom.Dataset:
    """A DICOM file parsed (its pixel data not yet decoded), from ``data`` when its bytes are already read;
    InputError when it cannot be, or when it was cut short: pydicom reads a cut file as a dataset that just
    stops, and a decoder may still make an image of what is left, so every file's elements are checked to end
    within it."""
    if data is None:
        with open(path, "rb") as f:  # read once: pydicom parses these bytes, and the walker checks them
            data = f.read()
    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError:
        raise InputError(path, "not a DICOM file (no 'DICM' marker after the 128-byte preamble)") from None
    except Exception as e:  # pydicom fails on a cut file through several exception types
        raise InputError(path, truncation_of(data) or f"the DICOM could not be parsed ({type(e).__name__}); it is "
                                                      "corrupt: re-export it from the modality or PACS") from None
    cut = truncation_of(data)
    if cut:
        raise InputError(path, cut)
    return ds


def _check_decoder(ds: pydicom.Dataset, path: str) -> None:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is None:
        return  # pydicom assumes implicit little endian, which needs no decoder
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise InputError(path, f"transfer syntax {ts} ({getattr(ts, 'name', 'unknown')}) has no pixel "
                               "decoder in pydicom; convert the file to an uncompressed syntax") from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        raise InputError(path, f"no decoder installed for {ts.name} ({ts}): install {missing}")


def _frame_indices(policy: str | int, n: int, path: str) -> list[int]:
    if policy == "all":
        return list(range(n))
    if policy == "middle":
        return [n // 2]
    try:
        i = int(policy)
    except (TypeError, ValueError):
        raise InputError(path, f"frame policy {policy!r} is not 'all', 'middle' or a frame index") from None
    if not -n <= i < n:
        raise InputError(path, f"frame {i} asked for, but the file has {n} frame(s)")
    return [i % n]


def _to_display(arr: np.ndarray, ds: pydicom.Dataset, photometric: str, pre: Preprocess) -> np.ndarray:
    if photometric == PALETTE:
        rgb = apply_color_lut(arr, ds).astype(np.float32)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return rgb * (255.0 / (2**bits - 1))
    if photometric in COLOUR:
        bits = int(ds.get("BitsStored", 8))
        return arr.astype(np.float32) * (255.0 / (2**bits - 1))
    invert = photometric == "MONOCHROME1" and pre.invert_monochrome1
    if arr.dtype.kind in "ui" and arr.dtype.itemsize <= 2:
        # Modality LUT, VOI and inversion are functions of the stored value alone: computed once per value
        # that occurs, then looked up, so the only full-size float array is the result.
        lo = int(arr.min())
        index = arr if arr.dtype.kind == "u" else arr.astype(np.int32) - lo
        start = 0 if arr.dtype.kind == "u" else lo
        levels = np.arange(start, int(arr.max()) + 1).astype(arr.dtype)
        present = np.bincount(index.ravel(), minlength=len(levels)) > 0
        table = _voi(apply_modality_lut(levels, ds).astype(np.float32), ds, pre.voi, present)
        table = 255.0 - table if invert else table
        return table[index][..., None]
    values = apply_modality_lut(arr, ds).astype(np.float32)
    grey = _voi(values, ds, pre.voi)
    return (255.0 - grey if invert else grey)[..., None]


def _voi(values: np.ndarray, ds: pydicom.Dataset, policy: str, present: np.ndarray | None = None) -> np.ndarray:
    """Map modality values to 0..255 with the file's VOI LUT or window, else min-max (over the ``present``
    entries of a lookup table)."""
    if policy == "file" and "VOILUTSequence" in ds:
        out = apply_voi_lut(values, ds, prefer_lut=True).astype(np.float32)
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return np.clip(out * (255.0 / (2**bits - 1)), 0, 255)
    if policy == "file" and "WindowCenter" in ds and "WindowWidth" in ds:
        center = float(_first(ds.WindowCenter))
        width = float(_first(ds.WindowWidth))
        if width >= 1:
            # DICOM PS3.3 C.11.2.1.2.1, the LINEAR function, onto 0..255.
            x = (values - (center - 0.5)) / (width - 1) + 0.5
            return np.clip(x, 0.0, 1.0) * 255.0
    seen = values if present is None else values[present]
    lo, hi = float(seen.min()), float(seen.max())
    if hi <= lo:
        return np.zeros_like(values)
    return (values - lo) * (255.0 / (hi - lo))


def _first(value):
    return value[0] if isinstance(value, pydicom.multival.MultiValue) else value
