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
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import cv2
import numpy as np

from .contract import Contract, IntendedUse
from .errors import MedliteError, Rejected
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


def decode(file: str, contract: Contract, intended: IntendedUse | None, size: tuple[int, int] | None = None,
           preview: int = 0):
    """Read and prepare every frame of one file: ("ok", [(frame, input), ...]), ("rejected", reason) or
    ("error", problem). A frame keeps its image's size; its pixels are dropped, or with ``preview`` kept as
    8-bit at most that many pixels on the longer side (for an overlay)."""
    try:
        out = []
        for f in read(file, contract.preprocess, intended, size):
            x = quantize(prepare(f.pixels, contract.preprocess, contract.input, f.file)[None], contract.input)
            kept = _preview(f.pixels, preview) if preview else np.empty((0, 0, 1), np.uint8)
            out.append((dataclasses.replace(f, pixels=kept, size=f.image_size), x))
        return "ok", out
    except Rejected as e:
        return "rejected", e.reason
    except MedliteError as e:
        return "error", getattr(e, "problem", str(e))
    except Exception as e:  # an unexpected decoder failure is still one file's failure, not the run's
        # Its message is left out: a parser's message can quote element values, a patient's name among them.
        return "error", f"could not be read ({type(e).__name__} in the decoder); the file is damaged or unusual"


# Decodes in flight per worker. In-order results mean a slow file (a 113 ms JPEG-lossless CR) holds back those
# after it; a deep window keeps the workers busy meanwhile. A finished decode is only the model's small input.
WINDOW = 16
_job: tuple = ()  # a worker's (contract, intended use, size), sent once when it starts rather than with each file


def _set_job(job: tuple) -> None:
    global _job
    _job = job
    _exit_with_parent()


def _exit_with_parent() -> None:
    """In a worker process: end it once its parent is gone. A parent killed outright (SIGKILL, the OOM killer)
    shuts no pool down, and its workers would otherwise wait for work for ever."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="medlite-parent-watch", daemon=True).start()


def decode_in_worker(file: str):
    return decode(file, *_job)


def _preview(pixels: np.ndarray, longest: int) -> np.ndarray:
    scale = longest / max(pixels.shape[:2])
    if scale < 1:
        size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
        small = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
        pixels = small[..., None] if small.ndim == 2 else small
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def _ready() -> bool:
    return True


def worker_pool(workers: int, ctx, job: tuple) -> ProcessPoolExecutor:
    """Decoding processes that receive ``job`` (contract, intended use, size, preview) once, when they start."""
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_set_job, initargs=(job,))


def _start_pool(workers: int, ctx, job: tuple) -> ProcessPoolExecutor | None:
    """A started pool, or None (with a warning) when worker processes cannot start here."""
    pool = None
    try:
        pool = worker_pool(workers, ctx, job)  # may fail already here, e.g. without a working resource tracker
        pool.submit(_ready).result(timeout=120)
        return pool
    except Exception as e:  # BrokenProcessPool, a timeout, an OSError from a sandbox
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        log.warning("decoding worker processes could not start (%s); decoding in the main process instead",
                    type(e).__name__)
        return None


def decode_isolated(file: str, job: tuple, ctx):
    """Decode one file in a single-use process: the way to tell a file that kills its decoder."""
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=_exit_with_parent) as one:
        try:
            return one.submit(decode, file, *job).result()
        except BrokenProcessPool:
            return "error", ("the image decoder crashed on this file (it is corrupt in a way the codec does not "
                             "survive); it was skipped")


def run(model: Model, files: list[str], workers: int = 2, draw: Callable | None = None,
        preview: int = 0) -> Iterator[dict]:
    """One record per frame or failure, in input order. ``workers=0`` decodes in this process. With ``draw``,
    each result also gets its heatmap, and ``draw(record, prediction, frame)`` is called before the record is
    yielded (the frame's pixels are a preview of ``preview`` pixels, or none)."""
    ctx = multiprocessing.get_context("spawn")  # never fork a process that holds an interpreter's threads
    job = (model.contract, model.reading_rules(), model.decode_size(), preview)
    pool = _start_pool(workers, ctx, job) if workers > 0 and len(files) > 1 else None
    if pool is None:
        for file in files:
            yield from records(model, file, decode(file, *job), draw)
        return
    pending: collections.deque = collections.deque()
    todo = iter(files)
    try:
        for file in todo:  # a bounded window of decodes ahead of inference
            pending.append((file, pool.submit(decode_in_worker, file)))
            if len(pending) >= WINDOW * workers:
                break
        while pending:
            file, fut = pending.popleft()
            try:
                decoded = fut.result()
            except BrokenProcessPool:
                # A worker died on one of the files in flight: retry this one alone to learn whether it is the
                # culprit, then carry on with a fresh pool (a later culprit breaks it again and is found the same way).
                decoded = decode_isolated(file, job, ctx)
                pool, pending = _fresh_pool(pool, pending, workers, ctx, job)
            nxt = next(todo, None)
            if nxt is not None:
                try:
                    pending.append((nxt, pool.submit(decode_in_worker, nxt)))
                except BrokenProcessPool:  # a worker died after this file's result came: the same, from here
                    pool, pending = _fresh_pool(pool, pending, workers, ctx, job)
                    pending.append((nxt, pool.submit(decode_in_worker, nxt)))
            yield from records(model, file, decoded, draw)
    finally:
        stop_pool(pool)


def _fresh_pool(pool: ProcessPoolExecutor, pending: collections.deque, workers: int, ctx, job: tuple):
    """A new pool in place of a broken one, with the files still in flight submitted to it again."""
    stop_pool(pool)
    pool = worker_pool(workers, ctx, job)
    return pool, collections.deque((f, pool.submit(decode_in_worker, f)) for f, _ in pending)


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel what is queued and end the workers now: a stopped run must not wait for decodes in flight."""
    # concurrent.futures has no public way to end its workers before Python 3.14 (terminate_workers), and
    # shutdown() drops its handles to them, so they are taken first.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()


def records(model: Model, file: str, decoded, draw: Callable | None = None) -> Iterator[dict]:
    """The records of one decoded file: its frames' results, or its rejection or error."""
    status, payload = decoded
    if status == "error":
        yield error_record(file, payload)
        return
    if status == "rejected":
        yield rejected_record(file, payload)
        return
    for frame, x in payload:
        if draw is None:
            yield model.predict_frame(frame, x=x).record()
            continue
        prediction = model.predict_frame(frame, heatmap=True, x=x)
        rec = prediction.record()
        draw(rec, prediction, frame)
        yield rec
