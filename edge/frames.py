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
    view_position: str | None = None  # DICOM ViewPosition (AP, PA, LL, ...), when the file has it
    size: tuple[int, int] | None = None  # the image's own (height, width), where ``pixels`` are smaller or gone
    age_years: float | None = None  # DICOM: the patient's age at the examination, when the file gives it
    age_unchecked: bool = False  # the intended use names ages, the file gives none, and it was answered anyway

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the input image, in whose pixels positions are reported."""
        return self.size or (int(self.pixels.shape[0]), int(self.pixels.shape[1]))
