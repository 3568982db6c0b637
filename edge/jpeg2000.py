"""Reduced-resolution JPEG 2000 decoding: a greyscale frame at the smallest resolution level the model can use.

A JPEG 2000 codestream holds its image as wavelet resolution levels; decoding
only the low ones skips most of the work (a 1955x1841 chest CR at half size in
about a third of the time). pylibjpeg-openjpeg, pydicom's own JPEG 2000 plug-in,
has no option for it; Pillow's OpenJPEG binding has (``Image.reduce``).
"""

from __future__ import annotations

import io
import struct

import numpy as np

J2K_SYNTAXES = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")  # JPEG 2000 lossless only, and lossy
# A reduced image keeps at least this many pixels per model input pixel along each side. The wavelet's low band
# is not the area average that ``prepare`` takes, and the difference grows as the level nears the input size:
# on a 1024x1024 chest DX for a 28x28 input the largest input difference is 3.4, 6.0, 13.4, 32 and 60 (of 255)
# at levels 1 to 5 (benchmarks/RESULTS.md).
MARGIN = 4


class Codestream:
    """The main header fields that decide whether, and how far, a codestream can be reduced."""

    def __init__(self, data: bytes):
        if data[:4] != b"\xff\x4f\xff\x51" or len(data) < 43:
            raise ValueError("not a raw JPEG 2000 codestream (SOC, SIZ)")
        (self.width, self.height, self.x_origin, self.y_origin) = struct.unpack(">4I", data[8:24])
        self.components = struct.unpack(">H", data[40:42])[0]
        ssiz = data[42]
        self.signed = bool(ssiz & 0x80)
        self.precision = (ssiz & 0x7F) + 1
        cod = data.find(b"\xff\x52", 4, data.find(b"\xff\x90", 4))  # the COD marker, in the main header
        self.levels = data[cod + 9] if cod > 0 else 0  # SPcod's number of decomposition levels

    def level_for(self, height: int, width: int) -> int:
        """The deepest resolution level whose image is still ``MARGIN`` times ``height`` x ``width`` (0: full
        size)."""
        height, width = height * MARGIN, width * MARGIN
        best = 0
        for r in range(1, self.levels + 1):
            h, w = (_ceil_shift(self.height, r), _ceil_shift(self.width, r))
            if h < height or w < width:
                break
            # Pillow sizes a reduced image by rounding, OpenJPEG by the ceiling; where they disagree, Pillow
            # reports a broken stream, so only levels on which both agree are used (a 1841-pixel side: level 1).
            if _pillow_size(self.height, r) != h or _pillow_size(self.width, r) != w:
                continue
            best = r
        return best


def _ceil_shift(n: int, r: int) -> int:
    return -(-n // (1 << r))


def _pillow_size(n: int, r: int) -> int:
    power = 1 << r
    return int((n + (power >> 1)) / power)


def reducible(ds, frame: bytes) -> Codestream | None:
    """The codestream when this frame can be decoded at reduced resolution into the same stored values: one
    unsigned greyscale component at the file's own bit depth, the image at the origin."""
    try:
        cs = Codestream(frame)
    except (ValueError, struct.error):
        return None
    ok = (cs.components == 1 and not cs.signed and cs.precision <= 16
          and cs.precision == int(ds.get("BitsStored", 0) or 0)
          and int(ds.get("PixelRepresentation", 0) or 0) == 0 and cs.x_origin == 0 and cs.y_origin == 0
          and (cs.height, cs.width) == (int(ds.Rows), int(ds.Columns)))
    return cs if ok else None


def decode_reduced(frame: bytes, cs: Codestream, level: int) -> np.ndarray:
    """The frame's stored values at resolution ``level``, as a 2-D unsigned array."""
    from PIL import Image  # imported only when a JPEG 2000 DICOM is read at reduced size

    with Image.open(io.BytesIO(frame)) as im:
        im.reduce = level
        im.load()
        arr = np.asarray(im)
    # Pillow widens samples to its mode's depth (I;16 or L); shift back to the stored bit depth.
    shift = (16 if arr.dtype == np.uint16 else 8) - cs.precision
    return arr >> shift if shift > 0 else arr
