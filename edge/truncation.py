"""Where a DICOM file that ends too early was cut: the commonest damage a cart sees (an interrupted copy or
transfer), which pydicom reports, if at all, as a dataset that just stops.

The file's elements are walked by their headers alone (tag, VR, length), as PS3.5 7.1 lays them out,
without reading any value: the file is cut when a value's declared length runs past its end, when it ends
inside an element's header, or inside a sequence or encapsulated pixel data of undefined length before their
delimiter.
"""

from __future__ import annotations

import struct

# Explicit VR: these VRs have 2 reserved bytes and a 4-byte length (PS3.5 7.1.2); the others a 2-byte length.
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
META = 0x00020000  # stands for the whole file meta information group in a _Cut
EXPLICIT_LITTLE, IMPLICIT_LITTLE, EXPLICIT_BIG = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"


class _Cut(Exception):
    """The file ends inside the value of ``tag`` (of ``length``), or inside its header when ``length`` is None."""

    def __init__(self, tag: int | None, length: int | None):
        self.tag, self.length = tag, length


def truncation(path: str) -> str | None:
    """Why the file at ``path`` is a cut DICOM; see ``truncation_of``."""
    try:
        with open(path, "rb") as f:
            return truncation_of(f.read())
    except OSError:
        return None


def truncation_of(data: bytes) -> str | None:
    """Why a DICOM file's bytes are cut ("the file ends at byte N, inside element (gggg,eeee) of length L: ..."),
    or None when its elements all end within it (or it is not a DICOM file this walker can read)."""
    if data[128:132] != b"DICM":
        return None
    try:
        # The file meta group is always explicit VR little endian; it names the syntax of the rest.
        pos, syntax = _meta(data)
        implicit, little = syntax == IMPLICIT_LITTLE, syntax != EXPLICIT_BIG
        _elements(data, pos, implicit, little, stop=None)
    except _Cut as cut:
        name = "an element" if cut.tag is None else f"element ({cut.tag >> 16:04X},{cut.tag & 0xFFFF:04X})"
        if cut.tag == META:
            where = f"inside its file meta information of {cut.length} bytes"
        elif cut.length is None:
            where = f"inside the header of {name}"
        else:
            where = f"inside {name} of " + ("undefined length" if cut.length == UNDEFINED else f"length {cut.length}")
        return (f"the file ends at byte {len(data)}, {where}: it is truncated (an interrupted copy or "
                "transfer?); send it again")
    except (struct.error, ValueError):
        return None  # malformed in some other way: not this module's to explain
    return None


def _meta(data: bytes) -> tuple[int, str]:
    """Where the data set starts, and its transfer syntax; ValueError for a file without one (not a DICOM
    file that was cut, but another kind of damage)."""
    pos, syntax, end = 132, None, None
    while pos + 8 <= len(data) and struct.unpack_from("<H", data, pos)[0] == 0x0002:
        tag, length, value = _header(data, pos, implicit=False, little=True)
        if value + length > len(data):
            raise _Cut(tag, length)
        if tag == 0x00020000 and length == 4:  # the group's length: where the meta information ends
            end = value + 4 + struct.unpack_from("<I", data, value)[0]
        if tag == 0x00020010:
            syntax = data[value : value + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = value + length
    if end is not None and end > len(data):
        raise _Cut(META, end - 132)
    if syntax is None:
        raise ValueError("no transfer syntax in the file meta information")
    return pos, syntax


def _header(data: bytes, pos: int, implicit: bool, little: bool) -> tuple[int, int, int]:
    """(tag, length, where its value starts) of the element at ``pos``."""
    e = "<" if little else ">"
    tag = None
    if pos + 4 <= len(data):
        group, element = struct.unpack_from(e + "HH", data, pos)
        tag = group << 16 | element
    if pos + 8 > len(data):
        raise _Cut(tag, None)
    if implicit or tag >> 16 == 0xFFFE:  # items and delimiters have no VR in any syntax
        return tag, struct.unpack_from(e + "I", data, pos + 4)[0], pos + 8
    vr = data[pos + 4 : pos + 6]
    if not (vr.isalpha() and vr.isupper()):
        raise ValueError(f"no VR at byte {pos + 4}: not a data set this walker can read")
    if vr in LONG_VRS:
        if pos + 12 > len(data):
            raise _Cut(tag, None)
        return tag, struct.unpack_from(e + "I", data, pos + 8)[0], pos + 12
    return tag, struct.unpack_from(e + "H", data, pos + 6)[0], pos + 8


def _elements(data: bytes, pos: int, implicit: bool, little: bool, stop: int | None) -> int:
    """Walk elements from ``pos`` to the end of the file, or to the ``stop`` delimiter; where they end. Tags
    ascend within a data set (PS3.5 7.1): one that does not means damage of another kind (ValueError)."""
    last = -1
    while pos < len(data):
        tag, length, value = _header(data, pos, implicit, little)
        if tag == stop:
            return value
        if tag is not None and tag <= last:
            raise ValueError(f"tag {tag:08X} after {last:08X}: not a data set this walker can read")
        last = tag if tag is not None else last
        if length == UNDEFINED:  # a sequence, or encapsulated pixel data: items until its delimiter
            pos = _items(data, value, implicit, little, tag)
            continue
        if value + length > len(data):
            raise _Cut(tag, length)
        pos = value + length
    if stop is not None:
        raise _Cut(None, None)
    return pos


def _items(data: bytes, pos: int, implicit: bool, little: bool, owner: int) -> int:
    """Walk the items of ``owner`` (of undefined length) to its delimiter; where it ends."""
    while True:
        if pos + 8 > len(data):
            raise _Cut(owner, UNDEFINED)
        tag, length, value = _header(data, pos, implicit=True, little=little)
        if tag == SEQUENCE_END:
            return value
        if tag != ITEM:
            raise ValueError(f"expected an item in ({owner >> 16:04X},{owner & 0xFFFF:04X})")
        if length == UNDEFINED:
            try:
                pos = _elements(data, value, implicit, little, stop=ITEM_END)
            except _Cut:
                raise _Cut(owner, UNDEFINED) from None
        elif value + length > len(data):
            raise _Cut(owner, UNDEFINED)
        else:
            pos = value + length
