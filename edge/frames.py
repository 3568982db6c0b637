"""The decoded image every reader returns, before the contract's preprocessing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One image or one frame of a cine: display values 0..255, float32, HxWxC (C is 1 or 3)."""

    pixels: np.ndarray
    file: str | None = None
    frame: int | None = None  # index within a multi-frame DICOM, else None
    sop_instance_uid: str | None = None  # identifies a DICOM instance without patient data
    modality: str | None = None  # DICOM Modality and BodyPartExamined, when the file has them
    body_part: str | None = None
