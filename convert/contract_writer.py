"""Writing the contract into a .tflite file as the ``medlite.contract`` metadata entry."""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from ..edge.contract import METADATA_NAME, Contract, read_contract


def embed_contract(tflite: bytes, contract: Contract) -> bytes:
    """``tflite`` with ``contract`` as its metadata entry (replacing an earlier one); read back to check."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(contract.to_json().encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    kept = [m for m in (model.metadata or []) if _name(m) != METADATA_NAME]
    model.metadata = kept + [entry]
    builder = flatbuffers.Builder(len(tflite) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out = bytes(builder.Output())
    if read_contract(out) != contract:
        raise RuntimeError("the contract read back from the written model differs from the one written")
    return out


def _name(metadata) -> str:
    name = metadata.name
    return name.decode() if isinstance(name, bytes) else (name or "")
