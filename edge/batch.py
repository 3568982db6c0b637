"""Running a model over many files: expand paths, decode in worker processes, infer in order, one record each.

Decoding a DICOM (pydicom and its codecs) holds Python's GIL most of the time,
so worker threads would barely overlap it; worker processes do. The main
process runs the interpreter while the workers decode and preprocess the
next files. A decoder that crashes its worker costs that one file, not the run.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import logging
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from .contract import Contract, IntendedUse
from .errors import MedliteError, Rejected
from .frames import Frame
from .preprocess import prepare, quantize
from .readers import SUFFIXES, read
from .runtime import Model

log = logging.getLogger("medlite")


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


def decode(file: str, contract: Contract, intended: IntendedUse | None):
    """Read and prepare every frame of one file: ("ok", [(frame without pixels, input), ...]),
    ("rejected", reason) or ("error", problem)."""
    try:
        out = []
        for f in read(file, contract.preprocess, intended):
            x = quantize(prepare(f.pixels, contract.preprocess, contract.input, f.file)[None], contract.input)
            out.append((dataclasses.replace(f, pixels=np.empty((0, 0, 1), np.float32)), x))
        return "ok", out
    except Rejected as e:
        return "rejected", e.reason
    except MedliteError as e:
        return "error", getattr(e, "problem", str(e))
    except Exception as e:  # an unexpected decoder failure is still one file's failure, not the run's
        # Its message is left out: a parser's message can quote element values, a patient's name among them.
        return "error", f"could not be read ({type(e).__name__} in the decoder); the file is damaged or unusual"


def _ready() -> bool:
    return True


def _start_pool(workers: int, ctx) -> ProcessPoolExecutor | None:
    """A started pool, or None (with a warning) when worker processes cannot start here."""
    pool = ProcessPoolExecutor(workers, mp_context=ctx)
    try:
        pool.submit(_ready).result(timeout=120)
        return pool
    except Exception as e:  # BrokenProcessPool, a timeout, an OSError from a sandbox
        pool.shutdown(wait=False, cancel_futures=True)
        log.warning("decoding worker processes could not start (%s); decoding in the main process instead",
                    type(e).__name__)
        return None


def _isolated(file: str, job: tuple, ctx):
    """Decode one file in a single-use process: the way to tell a file that kills its decoder."""
    with ProcessPoolExecutor(1, mp_context=ctx) as one:
        try:
            return one.submit(decode, file, *job).result()
        except BrokenProcessPool:
            return "error", ("the image decoder crashed on this file (it is corrupt in a way the codec does not "
                             "survive); it was skipped")


def run(model: Model, files: list[str], workers: int = 2) -> Iterator[dict]:
    """One record per frame or failure, in input order. ``workers=0`` decodes in this process."""
    ctx = multiprocessing.get_context("spawn")  # never fork a process that holds an interpreter's threads
    job = (model.contract, model.reading_rules())
    pool = _start_pool(workers, ctx) if workers > 0 and len(files) > 1 else None
    if pool is None:
        for file in files:
            yield from _infer(model, file, decode(file, *job))
        return
    pending: collections.deque = collections.deque()
    todo = iter(files)
    try:
        for file in todo:  # a bounded window of decodes ahead of inference
            pending.append((file, pool.submit(decode, file, *job)))
            if len(pending) >= 4 * workers:
                break
        while pending:
            file, fut = pending.popleft()
            try:
                decoded = fut.result()
            except BrokenProcessPool:
                # A worker died on one of the files in flight: retry this one alone to learn whether it is the
                # culprit, then carry on with a fresh pool (a later culprit breaks it again and is found the same way).
                decoded = _isolated(file, job, ctx)
                pool.shutdown(wait=False, cancel_futures=True)
                pool = ProcessPoolExecutor(workers, mp_context=ctx)
                pending = collections.deque((f, pool.submit(decode, f, *job)) for f, _ in pending)
            nxt = next(todo, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(decode, nxt, *job)))
            yield from _infer(model, file, decoded)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _infer(model: Model, file: str, decoded) -> Iterator[dict]:
    status, payload = decoded
    if status == "error":
        yield error_record(file, payload)
        return
    if status == "rejected":
        yield rejected_record(file, payload)
        return
    for frame, x in payload:
        scores, features, ms = model.infer(x)
        yield model.result(scores, ms, frame, features).record()
