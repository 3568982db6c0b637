"""Writing the contract into a .tflite file as the ``medlite.contract`` metadata entry, with its digests."""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from ..edge.contract import METADATA_NAME, Contract, contract_digest, read_contract
from ..edge.tflite_file import digest_outside, metadata_spans

PLACEHOLDER = "0" * 64
SIZE_PLACEHOLDER = "0" * 12  # the file's size, written as 12 digits so that it fits the placeholder


def _pack(tflite: bytes, contract: Contract) -> bytes:
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    kept = [m for m in (model.metadata or []) if _name(m) != METADATA_NAME]
    # The earlier contract's buffer is emptied too, so a replaced contract leaves nothing behind in the file.
    for m in model.metadata or []:
        if _name(m) == METADATA_NAME:
            model.buffers[m.buffer].data = None
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(contract.to_json().encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = kept + [entry]
    builder = flatbuffers.Builder(len(tflite) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def embed_contract(tflite: bytes, contract: Contract) -> bytes:
    """``tflite`` with ``contract`` as its metadata entry (replacing an earlier one), digests included.

    The content digest covers the whole file but the contract's own bytes; it is computed with a
    placeholder of the same length in their place, then written over the placeholder, so nothing moves.
    """
    contract = contract.replace(integrity={})
    d = contract.to_dict()
    sealed = contract.replace(integrity={"content_sha256": PLACEHOLDER, "contract_sha256": contract_digest(d),
                                         "file_size": SIZE_PLACEHOLDER})
    out = bytearray(_pack(tflite, sealed))
    start, end = metadata_spans(bytes(out))[METADATA_NAME]
    size = f"{len(out):012d}"
    _overwrite(out, start, end, "file_size", SIZE_PLACEHOLDER, size)
    digest = digest_outside(bytes(out), (start, end))
    _overwrite(out, start, end, "content_sha256", PLACEHOLDER, digest)
    out = bytes(out)
    final = sealed.replace(integrity={**sealed.integrity, "content_sha256": digest, "file_size": size})
    if read_contract(out) != final:
        raise RuntimeError("the contract read back from the written model differs from the one written")
    return out


def _overwrite(out: bytearray, start: int, end: int, key: str, placeholder: str, value: str) -> None:
    """Write ``value`` over the placeholder of ``key`` in the contract's JSON, which lies at out[start:end]."""
    field = f'"{key}": "{placeholder}"'.encode()
    at = bytes(out[start:end]).index(field) + start + len(field) - len(placeholder) - 1
    out[at : at + len(placeholder)] = value.encode()


def _name(metadata) -> str:
    name = metadata.name
    return name.decode() if isinstance(name, bytes) else (name or "")
