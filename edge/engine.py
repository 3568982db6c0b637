"""The decode engine: files decoded in worker processes, a bounded window ahead, results in the order given.

Every caller that runs a model over many files drives it: folder prediction
(``batch.run``) and the DICOM node. Decoding a DICOM (pydicom and its codecs)
holds Python's GIL most of the time, so worker threads would barely overlap it;
worker processes do, while the caller's process runs the interpreter. A decoder
that crashes its worker costs that one file: the file is decoded again alone,
in a single-use process, to tell whether it is the culprit, and a fresh pool
takes the files that were in flight. Workers end themselves once their parent
is gone.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .backends.litert import quiet, quiet_stderr
from .contract import Contract, IntendedUse
from .errors import MedliteError, Rejected
from .frames import Frame
from .preprocess import prepare, quantize
from .readers import is_dicom, read

log = logging.getLogger("medlite")

# Decodes in flight per worker. In-order results mean a slow file (a 113 ms JPEG-lossless CR) holds back those
# after it; a deep window keeps the workers busy meanwhile. A finished decode is only the model's small input.
WINDOW = 16


@dataclass(frozen=True)
class Job:
    """What a decoding worker needs to know, sent once when it starts."""

    contract: Contract
    intended: IntendedUse | None  # None: DICOMs outside the intended use are decoded too
    size: tuple[int, int] | None  # the size JPEG 2000 may be decoded down to; None: full resolution
    preview: int = 0  # keep each frame's pixels as 8-bit, at most this many on the longer side (0: drop them)


@dataclass(frozen=True)
class Decoded:
    """One file decoded: its frames with their prepared inputs (``ok``), or why not (``rejected``, ``error``)."""

    file: str
    status: str
    frames: tuple[tuple[Frame, np.ndarray], ...] = ()
    problem: str = ""  # the rejection's reason or the error
    # A DICOM's patient, study and identity, read in the same parse as its pixels, for a report about it
    # (patient data: never logged or recorded); None for other files or an unreadable header.
    header: Any = None


def decode(file: str, job: Job, data: bytes | None = None) -> Decoded:
    """Read and prepare every frame of one file (from ``data``, its bytes, when they are already read). A frame
    keeps its image's size; its pixels are dropped, or with ``job.preview`` kept as 8-bit (for an overlay)."""
    header = None
    try:
        pre = job.contract.preprocess
        if is_dicom(file, data):
            from .dicom import dicom_frames, open_dicom, report_header

            ds = open_dicom(file, data)
            header = report_header(ds)
            frames = dicom_frames(ds, file, pre, job.intended, job.size)
        else:
            frames = read(file, pre, job.intended, job.size, data)
        out = []
        for f in frames:
            x = quantize(prepare(f.pixels, pre, job.contract.input, f.file)[None], job.contract.input)
            kept = _preview(f.pixels, job.preview) if job.preview else np.empty((0, 0, 1), np.uint8)
            out.append((dataclasses.replace(f, pixels=kept, size=f.image_size), x))
        return Decoded(file, "ok", tuple(out), header=header)
    except Rejected as e:
        return Decoded(file, "rejected", problem=e.reason, header=header)
    except MedliteError as e:
        return Decoded(file, "error", problem=getattr(e, "problem", str(e)), header=header)
    except Exception as e:  # an unexpected decoder failure is still one file's failure, not the run's
        # Its message is left out: a parser's message can quote element values, a patient's name among them.
        return Decoded(file, "error", problem=f"could not be read ({type(e).__name__} in the decoder); the file "
                                              "is damaged or unusual", header=header)


def crashed(file: str) -> Decoded:
    return Decoded(file, "error", problem="the image decoder crashed on this file (it is corrupt in a way the "
                                          "codec does not survive); it was skipped")


def _preview(pixels: np.ndarray, longest: int) -> np.ndarray:
    scale = longest / max(pixels.shape[:2])
    if scale < 1:
        size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
        small = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
        pixels = small[..., None] if small.ndim == 2 else small
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


# -- in a worker process ----------------------------------------------------------------------------------------
_job: Job | None = None  # this worker's job, set once when it starts


def _start_worker(job: Job | None) -> None:
    global _job
    _job = job
    _exit_with_parent()
    if quiet():  # decoders (libjpeg, OpenJPEG, GDCM) print their complaints here; the record says what matters
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)


def _exit_with_parent() -> None:
    """End this worker once its parent is gone: a parent killed outright (SIGKILL, the OOM killer) shuts no
    pool down, and its workers would otherwise wait for work for ever."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="medlite-parent-watch", daemon=True).start()


def _decode_here(file: str) -> Decoded:
    return decode(file, _job)


def _ready() -> bool:
    return True


# -- in the caller's process ------------------------------------------------------------------------------------
class Engine:
    """Decodes the files given to ``submit`` in ``workers`` processes (0: in this process, at ``submit``) and
    gives them back by ``next`` in the order submitted. Use it as a context manager: leaving it ends the
    workers at once, without waiting for decodes in flight."""

    def __init__(self, job: Job, workers: int = 2):
        self.job = job
        self.workers = workers
        self._ctx = multiprocessing.get_context("spawn")  # never fork a process that holds an interpreter
        self._pool = self._start_pool() if workers > 0 else None
        self._pending: collections.deque = collections.deque()  # (file, future or Decoded)

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        """Files submitted and not yet given back."""
        return len(self._pending)

    def full(self) -> bool:
        """The window is full: take a result before submitting more. Decoding in this process, a file is
        done when submitted, so one is a full window."""
        return len(self._pending) >= (1 if self._pool is None else WINDOW * self.workers)

    def submit(self, file: str) -> None:
        if self._pool is None:
            with quiet_stderr(quiet()):  # as a worker's: decoders' own complaints only with --verbose
                self._pending.append((file, decode(file, self.job)))
            return
        try:
            self._pending.append((file, self._pool.submit(_decode_here, file)))
        except BrokenProcessPool:  # a worker died after its last result came: the same, from a fresh pool
            self._renew_pool()
            self._pending.append((file, self._pool.submit(_decode_here, file)))

    def next(self, timeout: float | None = None) -> Decoded | None:
        """The oldest submitted file, decoded; None when nothing is pending, or it is not done in ``timeout``
        seconds."""
        if not self._pending:
            return None
        file, fut = self._pending[0]
        if isinstance(fut, Decoded):
            self._pending.popleft()
            return fut
        try:
            decoded = fut.result(timeout)
        except concurrent.futures.TimeoutError:
            return None
        except BrokenProcessPool:
            # A worker died on one of the files in flight: this one alone tells whether it is the culprit; a
            # later culprit breaks the fresh pool again and is found the same way.
            decoded = self._decode_alone(file)
            self._pending.popleft()
            self._renew_pool()
            return decoded
        self._pending.popleft()
        return decoded

    def close(self) -> None:
        """Cancel what is queued and end the workers now: a stopped run must not wait for decodes in flight."""
        if self._pool is not None:
            _stop(self._pool)
            self._pool = None
        self._pending.clear()

    def _start_pool(self) -> ProcessPoolExecutor | None:
        """A started pool, or None (with a warning) when worker processes cannot start here (a sandbox, qemu)."""
        pool = None
        try:
            pool = self._new_pool()
            pool.submit(_ready).result(timeout=120)
            return pool
        except Exception as e:  # BrokenProcessPool, a timeout, an OSError from a sandbox
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            log.warning("decoding worker processes could not start (%s); decoding in the main process instead",
                        type(e).__name__)
            return None

    def _renew_pool(self) -> None:
        """A new pool in place of a broken one, with the files still in flight submitted to it again."""
        _stop(self._pool)
        self._pool = self._new_pool()
        self._pending = collections.deque(
            (f, d if isinstance(d, Decoded) else self._pool.submit(_decode_here, f)) for f, d in self._pending)

    def _new_pool(self) -> ProcessPoolExecutor:
        """Worker processes that receive the job once, when they start."""
        return ProcessPoolExecutor(self.workers, mp_context=self._ctx, initializer=_start_worker,
                                   initargs=(self.job,))

    def _decode_alone(self, file: str) -> Decoded:
        """Decode one file in a single-use process: the way to tell a file that kills its decoder."""
        with ProcessPoolExecutor(1, mp_context=self._ctx, initializer=_start_worker, initargs=(None,)) as one:
            try:
                return one.submit(decode, file, self.job).result()
            except BrokenProcessPool:
                return crashed(file)


def _stop(pool: ProcessPoolExecutor) -> None:
    # concurrent.futures has no public way to end its workers before Python 3.14 (terminate_workers), and
    # shutdown() drops its handles to them, so they are taken first.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
