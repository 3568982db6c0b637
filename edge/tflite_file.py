"""Reading a .tflite flatbuffer without TensorFlow: integrity checks and metadata entries.

A truncated or foreign file handed to the LiteRT runtime can crash the process
(LiteRT issue 10080), so every model is walked here first: the identifier, the
root table, every buffer and the metadata must lie inside the file. The reader
is a few lines of ``struct`` so that it works with either runtime installed.
"""

from __future__ import annotations

import hashlib
import struct

from .errors import ModelError

IDENTIFIER = b"TFL3"

# Field indices in the TFLite schema (tensorflow/lite/schema/schema.fbs).
_MODEL_OPERATOR_CODES = 1
_MODEL_SUBGRAPHS = 2
_MODEL_BUFFERS = 4
_MODEL_METADATA = 6
_METADATA_NAME = 0
_METADATA_BUFFER = 1
_BUFFER_DATA = 0
_BUFFER_OFFSET = 1
_BUFFER_SIZE = 2
_OPCODE_CUSTOM_CODE = 1


class _Reader:
    """Bounds-checked access to flatbuffer tables, vectors and strings."""

    def __init__(self, buf: bytes, file: str | None):
        self.buf = buf
        self.file = file

    def fail(self, problem: str):
        raise ModelError(self.file, problem)

    def u32(self, pos: int) -> int:
        if pos < 0 or pos + 4 > len(self.buf):
            self.fail("the file is truncated or corrupt (a reference points past its end); re-copy the model")
        return struct.unpack_from("<I", self.buf, pos)[0]

    def field_pos(self, table: int, field: int) -> int | None:
        """Absolute position of a field's value, or None when the field is absent."""
        vtable = table - struct.unpack_from("<i", self.buf, table)[0] if table + 4 <= len(self.buf) else -1
        if vtable < 0 or vtable + 4 > len(self.buf):
            self.fail("the file is truncated or corrupt (bad table); re-copy the model")
        vt_size = struct.unpack_from("<H", self.buf, vtable)[0]
        slot = 4 + 2 * field
        if slot + 2 > vt_size:
            return None
        off = struct.unpack_from("<H", self.buf, vtable + slot)[0]
        return table + off if off else None

    def deref(self, pos: int) -> int:
        return pos + self.u32(pos)

    def vector(self, table: int, field: int) -> tuple[int, int]:
        """(start of elements, length) of a vector field; (0, 0) when absent."""
        pos = self.field_pos(table, field)
        if pos is None:
            return 0, 0
        vec = self.deref(pos)
        n = self.u32(vec)
        return vec + 4, n

    def tables(self, table: int, field: int) -> list[int]:
        start, n = self.vector(table, field)
        if start + 4 * n > len(self.buf):
            self.fail("the file is truncated (a table list runs past its end); re-copy the model")
        return [self.deref(start + 4 * i) for i in range(n)]

    def string(self, table: int, field: int) -> str | None:
        pos = self.field_pos(table, field)
        if pos is None:
            return None
        s = self.deref(pos)
        n = self.u32(s)
        if s + 4 + n > len(self.buf):
            self.fail("the file is truncated (a name runs past its end); re-copy the model")
        return self.buf[s + 4 : s + 4 + n].decode("utf-8", "replace")

    def scalar(self, table: int, field: int, fmt: str, default: int = 0) -> int:
        pos = self.field_pos(table, field)
        if pos is None:
            return default
        if pos + struct.calcsize(fmt) > len(self.buf):
            self.fail("the file is truncated; re-copy the model")
        return struct.unpack_from("<" + fmt, self.buf, pos)[0]


def _buffer_span(r: _Reader, buffer_table: int) -> tuple[int, int]:
    """Where a buffer's bytes lie in the file: (start, end), checked to be inside it."""
    start, n = r.vector(buffer_table, _BUFFER_DATA)
    if n:
        if start + n > len(r.buf):
            r.fail(f"the file is truncated: a weight buffer of {n} bytes runs past the end of the file "
                   f"({len(r.buf)} bytes); re-copy the model")
        return start, start + n
    # Large models keep buffers after the flatbuffer, addressed by offset and size.
    offset = r.scalar(buffer_table, _BUFFER_OFFSET, "Q")
    size = r.scalar(buffer_table, _BUFFER_SIZE, "Q")
    if offset > 1:
        if offset + size > len(r.buf):
            r.fail(f"the file is truncated: a weight buffer at byte {offset} of {size} bytes runs past "
                   f"the end of the file ({len(r.buf)} bytes); re-copy the model")
        return offset, offset + size
    return 0, 0


def metadata_spans(buf: bytes, file: str | None = None) -> dict[str, tuple[int, int]]:
    """Check that ``buf`` is a whole TFLite model; where each metadata entry's bytes lie, by name.

    Raises ModelError naming ``file`` when it is not a TFLite file or is truncated.
    """
    if len(buf) < 8 or buf[4:8] != IDENTIFIER:
        raise ModelError(file, "not a TensorFlow Lite model (no 'TFL3' identifier); "
                               "pass a .tflite file written by `medlite convert`")
    r = _Reader(buf, file)
    root = r.u32(0)
    if root >= len(buf):
        r.fail("the file is truncated or corrupt (root table outside the file); re-copy the model")
    if not r.tables(root, _MODEL_SUBGRAPHS):
        r.fail("the model has no subgraph; it is corrupt or not an inference model")
    spans = [_buffer_span(r, b) for b in r.tables(root, _MODEL_BUFFERS)]
    metadata = {}
    for m in r.tables(root, _MODEL_METADATA):
        name = r.string(m, _METADATA_NAME) or ""
        index = r.scalar(m, _METADATA_BUFFER, "I")
        if index >= len(spans):
            r.fail(f"metadata entry {name!r} points at buffer {index}, which does not exist; the file is corrupt")
        metadata[name] = spans[index]
    return metadata


def digest_outside(buf: bytes, span: tuple[int, int]) -> str:
    """SHA-256 of the file with the bytes of ``span`` counted as zeros: everything but one metadata entry."""
    start, end = span
    h = hashlib.sha256(memoryview(buf)[:start])
    h.update(bytes(end - start))
    h.update(memoryview(buf)[end:])
    return h.hexdigest()


def custom_ops(buf: bytes) -> list[str]:
    """Names of the custom operators a model uses (an Edge TPU build holds ``edgetpu-custom-op``).

    Only the operator codes are read (bounds-checked): ``load`` has walked the whole file already."""
    if len(buf) < 8 or buf[4:8] != IDENTIFIER:
        raise ModelError(None, "not a TensorFlow Lite model (no 'TFL3' identifier)")
    r = _Reader(buf, None)
    names = (r.string(code, _OPCODE_CUSTOM_CODE) for code in r.tables(r.u32(0), _MODEL_OPERATOR_CODES))
    return sorted({n for n in names if n})
