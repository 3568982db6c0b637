"""Writing the contract into a .tflite file as the ``medlite.contract`` metadata entry, with its digests."""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from ..edge.contract import METADATA_NAME, Contract, contract_digest, read_contract
from ..edge.tflite_file import digest_outside, metadata_spans

PLACEHOLDER = "0" * 64


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
    sealed = contract.replace(integrity={"content_sha256": PLACEHOLDER, "contract_sha256": contract_digest(d)})
    out = bytearray(_pack(tflite, sealed))
    start, end = metadata_spans(bytes(out))[METADATA_NAME]
    digest = digest_outside(bytes(out), (start, end))
    field = f'"content_sha256": "{PLACEHOLDER}"'.encode()
    at = bytes(out[start:end]).index(field) + start + len(field) - len(PLACEHOLDER) - 1
    out[at : at + len(PLACEHOLDER)] = digest.encode()
    out = bytes(out)
    final = sealed.replace(integrity={**sealed.integrity, "content_sha256": digest})
    if read_contract(out) != final:
        raise RuntimeError("the contract read back from the written model differs from the one written")
    return out


def _name(metadata) -> str:
    name = metadata.name
    return name.decode() if isinstance(name, bytes) else (name or "")
