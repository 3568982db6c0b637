"""Running a model over many files: expand paths, decode in a worker pool, infer in order, one record each.

Decoding (pydicom, OpenCV) and preprocessing run in worker threads while the
main thread runs the interpreter, so a folder run overlaps the two.
"""

from __future__ import annotations

import collections
import glob
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from medlite.edge.errors import MedliteError
from medlite.edge.readers import SUFFIXES
from medlite.edge.runtime import Model


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


def ok_record(p) -> dict:
    rec = {"file": p.file, "status": "ok", "label": p.label, "scores": p.scores, "positive": p.positive,
           "score": p.score, "threshold": p.threshold, "backend": p.backend, "latency_ms": p.latency_ms,
           "model_sha256": p.model_sha256}
    if p.frame is not None:
        rec["frame"] = p.frame
    if p.sop_instance_uid:
        rec["sop_instance_uid"] = p.sop_instance_uid
    return rec


def _decode(model: Model, file: str):
    """Worker: read and prepare every frame of one file; an exception becomes the file's error."""
    try:
        return [(f, model.prepare(f)) for f in model.frames(file)], None
    except MedliteError as e:
        return None, e.problem if hasattr(e, "problem") else str(e)
    except Exception as e:  # an unexpected decoder failure is still one file's failure, not the run's
        return None, f"could not be read ({type(e).__name__}: {e})"


def run(model: Model, files: list[str], workers: int = 2) -> Iterator[dict]:
    """One record per frame or failure, in input order. ``workers=0`` decodes in the main thread."""
    if workers <= 0:
        for file in files:
            yield from _infer(model, file, _decode(model, file))
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="medlite-decode") as pool:
        pending = collections.deque()
        it = iter(files)
        for file in it:  # keep a bounded window of decodes ahead of inference
            pending.append((file, pool.submit(_decode, model, file)))
            if len(pending) >= 2 * workers:
                break
        while pending:
            file, fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(_decode, model, nxt)))
            yield from _infer(model, file, fut.result())


def _infer(model: Model, file: str, decoded) -> Iterator[dict]:
    frames, error = decoded
    if error is not None:
        yield error_record(file, error)
        return
    for frame, x in frames:
        scores, ms = model.run(x)
        yield ok_record(model.decide(scores, ms, frame))
