"""Running a model over many files: expand paths, decode them with the decode engine, infer in order, one
record each."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .engine import Decoded, Engine, Job
from .readers import SUFFIXES
from .runtime import Model


def expand(inputs: Iterable[str]) -> tuple[list[str], list[dict]]:
    """Files from files, folders (recursive) and globs; and an error record for each input that matched nothing."""
    files, missing = [], []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(str(p) for p in Path(item).rglob("*") if p.is_file() and _looks_like_image(p))
            files.extend(found)
            if not found:
                missing.append(error_record(item, "the folder holds no DICOM, PNG, JPEG, TIFF or .npy files"))
        elif os.path.exists(item):
            files.append(item)
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            files.extend(found)
            if not found:
                missing.append(error_record(item, "the pattern matched no files"))
        else:
            missing.append(error_record(item, "no such file or folder"))
    return files, missing


def _looks_like_image(p: Path) -> bool:
    if p.name.startswith("."):
        return False
    return p.suffix.lower() in SUFFIXES or p.suffix == ""  # DICOM files often have no suffix


def error_record(file: str, error: str) -> dict:
    return {"file": file, "status": "error", "error": error}


def rejected_record(file: str, reason: str) -> dict:
    return {"file": file, "status": "rejected", "reason": reason}


def job_of(model: Model, preview: int = 0) -> Job:
    """What decoding needs to know of a loaded model and its run options."""
    return Job(model.contract, model.reading_rules(), model.decode_size(), preview)


def run(model: Model, files: list[str], workers: int = 2, draw: Callable | None = None,
        preview: int = 0) -> Iterator[dict]:
    """One record per frame or failure, in input order. ``workers=0`` decodes in this process. With ``draw``,
    each result also gets its heatmap, and ``draw(record, prediction, frame)`` is called before the record is
    yielded (the frame's pixels are a preview of ``preview`` pixels, or none)."""
    with Engine(job_of(model, preview), workers if len(files) > 1 else 0) as engine:
        for file in files:
            engine.submit(file)
            while engine.full():
                yield from records(model, engine.next(), draw)
        while len(engine):
            yield from records(model, engine.next(), draw)


def records(model: Model, decoded: Decoded, draw: Callable | None = None, heatmap: bool = False) -> Iterator[dict]:
    """The records of one decoded file: its frames' results, or its rejection or error. With ``heatmap`` (or
    ``draw``) each result's record also has the heatmap's peak and box, in the image's own pixels."""
    if decoded.status == "error":
        yield error_record(decoded.file, decoded.problem)
        return
    if decoded.status == "rejected":
        yield rejected_record(decoded.file, decoded.problem)
        return
    for frame, x in decoded.frames:
        if draw is None:
            yield model.predict_frame(frame, heatmap=heatmap, x=x).record()
            continue
        prediction = model.predict_frame(frame, heatmap=True, x=x)
        rec = prediction.record()
        draw(rec, prediction, frame)
        yield rec
