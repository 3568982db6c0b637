"""The cart runtime: load a medlite .tflite on the best backend present and classify images with it.

Thread safety: a ``Model`` may be shared between threads; each call to the
interpreter holds the model's lock, so calls are serialised. For parallel
inference load one ``Model`` per worker (the interpreter is not re-entrant).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from . import backends
from .backends import edgetpu
from .backends.session import Options
from .contract import Contract, IntendedUse, read_contract
from .decision import decide
from .errors import BackendUnavailable, InputError, ModelError
from .frames import Frame
from .heatmap import Cam, Rendered, render
from .ood import OodDetector
from .prediction import Prediction, recorder
from .preprocess import prepare, quantize
from .readers import read
from .scores import code_table, dequantize, float32_pair, quant_of, softmax


SCORES_SEEN = 4096  # distinct score codes of an 8-bit model whose scores are kept (a few KiB each thousand)


@dataclass(frozen=True)
class Attempt:
    """One backend tried while loading: whether it ran the model, and why not."""

    backend: str
    ok: bool
    reason: str = ""


class Model:
    """A loaded model; build it with ``load``."""

    def __init__(self, path: str | None, model_bytes: bytes, contract: Contract, session,
                 attempts: tuple[Attempt, ...], sha256: str):
        self.path = path
        self.contract = contract
        self.sha256 = sha256
        self.attempts = attempts
        self.size_bytes = len(model_bytes)
        self._session = session
        self._lock = threading.Lock()
        self._check_session(contract, session)
        self._labels = contract.labels
        self._scores_at, self._features_at = contract.scores_output, contract.features_output
        self._out_quant = quant_of(session.outputs[self._scores_at].quant)
        self._features_quant = None if self._features_at is None else \
            quant_of(session.outputs[self._features_at].quant)
        # 8-bit outputs are dequantized by table: the float32 value of each of the 256 codes, computed once.
        table = code_table(session.outputs[self._scores_at], self._out_quant)
        self._out_table = None if table is None else table.tolist()
        self._scores_seen: dict[bytes, list[float]] = {}
        self._features_table = None if self._features_at is None else \
            code_table(session.outputs[self._features_at], self._features_quant)
        self._ood = OodDetector.from_dict(contract.ood) if contract.ood and self._features_at is not None else None
        # The guard's score is an output of the model itself (convert/guard_graph.py); a model converted before
        # that has only the detector's parameters, and the host computes the score from the features.
        self._guard_at = None if self._ood is None else contract.ood.get("output")
        self._cam = Cam.from_dict(contract.heatmap) if contract.heatmap and self._features_at is not None else None
        self._map_quant = None if self._cam is None else quant_of(session.outputs[self._cam.output].quant)
        # The outputs a prediction reads (the features only for a host-computed guard); all of them for infer,
        # and the feature map as well for a heatmap.
        guard_reads = self._features_at if self._guard_at is None else self._guard_at
        self._wanted = (self._scores_at,) + (() if self._ood is None else (guard_reads,))
        self._wanted_all = tuple(dict.fromkeys(self._wanted + (() if self._features_at is None else
                                                               (self._features_at,))))
        self._in_spec = contract.input
        self._softmax = contract.activation == "softmax"
        self._pair = float32_pair()  # two-class scores are rounded to float32 through it, under the lock
        # Set to run DICOMs outside the intended use anyway (`--ignore-intended-use`); each result says so.
        self.intended_use_ignored = False
        # Set to decode every DICOM at full resolution (`--full-decode`), not JPEG 2000 at a reduced level.
        self.full_decode = False
        self._record = recorder(self)
        self._predict = self._predictor()

    @property
    def backend(self) -> str:
        return self._session.backend

    def _check_session(self, c: Contract, s) -> None:
        shape = (1, c.input.height, c.input.width, c.input.channels)
        if tuple(s.input.shape) != shape or s.input.dtype != np.dtype(c.input.dtype):
            raise ModelError(self.path, f"the contract says input {shape} {c.input.dtype} but the model takes "
                                        f"{tuple(s.input.shape)} {s.input.dtype}; the file was altered after "
                                        "conversion")
        guard = c.ood.get("output") if c.ood else None
        wanted = [i for i in (c.scores_output, c.features_output, c.heatmap.get("output"), guard) if i is not None]
        if max(wanted) >= len(s.outputs):
            raise ModelError(self.path, f"the contract names output {max(wanted)} but the model has "
                                        f"{len(s.outputs)}; the file was altered after conversion")
        if guard is not None and (s.outputs[guard].dtype != np.float32 or int(np.prod(s.outputs[guard].shape)) != 1):
            raise ModelError(self.path, f"output {guard}, the guard's score, is {s.outputs[guard].shape} "
                                        f"{s.outputs[guard].dtype}, not one float32; the file was altered")
        n_out = int(np.prod(s.outputs[c.scores_output].shape))
        if n_out != len(c.labels):
            raise ModelError(self.path, f"the model has {n_out} scores but the contract names "
                                        f"{len(c.labels)} labels")

    def prepare(self, frame: Frame) -> np.ndarray:
        """A decoded frame to the exact input tensor (batch 1, model dtype)."""
        x = prepare(frame.pixels, self.contract.preprocess, self._in_spec, frame.file)
        return quantize(x[None], self._in_spec)

    def _invoke(self, x: np.ndarray, wanted: tuple[int, ...]) -> tuple[list, np.ndarray, float]:
        """The ``wanted`` outputs, the scores (dequantized, the contract's activation applied in float) and the
        interpreter's latency in ms."""
        with self._lock:  # the scores too: they are rounded through the model's own pair of float32s
            t0 = time.perf_counter()
            outputs = self._session.run(x, wanted)
            dt = time.perf_counter() - t0
            scores = self._scores_of(outputs[self._scores_at].reshape(-1))
        return outputs, np.array(scores, dtype=np.float32), dt * 1e3

    def _scores_of(self, raw: np.ndarray | memoryview) -> list[float]:
        """The scores output (flat) as Python floats holding float32 values: dequantized, the activation applied.
        An 8-bit output's scores depend on its codes alone, so they are computed once per distinct codes.
        Called under the model's lock."""
        if self._out_table is None:
            scores = dequantize(np.asarray(raw), self._out_quant).tolist()
            return softmax(scores, self._pair) if self._softmax else scores
        key = raw.tobytes()
        scores = self._scores_seen.get(key)
        if scores is None:
            table = self._out_table
            scores = [table[q] for q in raw.tolist()]
            scores = softmax(scores, self._pair) if self._softmax else scores
            if len(self._scores_seen) < SCORES_SEEN:
                self._scores_seen[key] = scores
        return scores  # shared with later calls: read, never changed

    def _features_of(self, raw: np.ndarray) -> np.ndarray:
        """The features output dequantized (float32 values; float64 when read by table)."""
        if self._features_table is not None:
            return self._features_table.take(raw.reshape(-1))
        return dequantize(raw, self._features_quant)

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, float | None, float]:
        """Prepared input to class scores, the penultimate features (None when the model gives none), the
        guard's score (None without a guard) and the interpreter's latency in ms."""
        outputs, scores, ms = self._invoke(x, self._wanted_all)
        features = None
        if self._features_at is not None:
            features = self._features_of(outputs[self._features_at]).astype(np.float32, copy=False)
        return scores, features, self._guard_score(outputs), ms

    def run(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """Prepared input to class scores and the interpreter's latency in ms."""
        scores, _, _, ms = self.infer(x)
        return scores, ms

    def _guard_score(self, outputs: list) -> float | None:
        """The guard's score from one call's outputs: the model's own, or the host's from the features."""
        if self._ood is None:
            return None
        if self._guard_at is not None:
            return outputs[self._guard_at].item()
        return self._ood.score(self._features_of(outputs[self._features_at]))

    def ood_score(self, features: np.ndarray | None) -> tuple[bool | None, float | None]:
        """(in_distribution, score) of an input's features by the host's float64 arithmetic (the reference the
        model's own guard output is tested against); (None, None) for a model without a detector."""
        if self._ood is None or features is None:
            return None, None
        score = self._ood.score(features)
        return score <= self._ood.threshold, score

    @property
    def has_heatmap(self) -> bool:
        """The model gives its last feature map, so a heatmap can be made (``heatmap=True``)."""
        return self._cam is not None

    def explain(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, float | None, np.ndarray, float]:
        """``infer`` that also returns the last feature map (h x w x C, dequantized) for a heatmap: scores,
        features, guard score, map, latency."""
        if self._cam is None:
            raise ModelError(self.path, "this model gives no feature map for a heatmap: its head is not global "
                                        "average pooling then dense layers, or it was converted before heatmaps")
        outputs, scores, ms = self._invoke(x, self._wanted_all + (self._cam.output,))
        features = self._features_of(outputs[self._features_at]).astype(np.float32, copy=False)
        fmap = outputs[self._cam.output]
        return scores, features, self._guard_score(outputs), dequantize(fmap, self._map_quant).reshape(
            fmap.shape[-3:]), ms

    def heatmap_of(self, scores: np.ndarray, features: np.ndarray, fmap: np.ndarray,
                   image_size: tuple[int, int]) -> Rendered:
        """The decided class's map (a binary model's positive class) over an image of ``image_size``."""
        c = self.contract
        cls = c.positive_index if c.positive_index is not None else int(decide(scores, c))
        cmap = self._cam.class_map(fmap, features, cls)
        return render(cmap, *image_size, c.preprocess.crop, self._cam.box_fraction)

    def result(self, scores: np.ndarray, latency_ms: float, frame: Frame | None = None,
               ood_score: float | None = None) -> Prediction:
        """Scores (and the guard's score) of one input, as ``infer`` gives them, to its Prediction, by the
        contract's decision rule."""
        inside = None if ood_score is None or self._ood is None else ood_score <= self._ood.threshold
        return self._record(np.asarray(scores, dtype=np.float32).tolist(), latency_ms, frame, inside, ood_score)

    def _predictor(self):
        """``_predict(x, frame)``: the interpreter's outputs read in place (no copies) under the lock, straight
        into the Prediction. Built once per model as a closure over everything a call reads: a small model's
        interpreter call leaves the host's caches cold, and after it each attribute looked up and each
        intermediate object costs a cache miss (benchmarks/RESULTS.md, "What medlite adds to LiteRT")."""
        acquire, release = self._lock.acquire, self._lock.release  # bound once: cheaper than `with` cold
        clock, call, pair = time.perf_counter, self._session.bind(self._wanted), self._pair
        scores_at, scores_of, record = self._scores_at, self._scores_of, self._record
        plain = self._out_table is None and self._out_quant is None  # float scores, read as they are
        seen = self._scores_seen if self._out_table is not None else None  # 8-bit scores, by their codes
        apply_softmax = softmax if self._softmax else None
        ood, guard_at, features_at, features_of = self._ood, self._guard_at, self._features_at, self._features_of
        threshold = None if ood is None else ood.threshold

        def predict(x: np.ndarray, frame: Frame | None) -> Prediction:
            acquire()
            try:
                t0 = clock()
                outputs = call(x)
                ms = (clock() - t0) * 1e3
                if plain:
                    scores = outputs[scores_at].tolist()
                    if apply_softmax is not None:
                        scores = apply_softmax(scores, pair)
                elif seen is not None:  # codes seen before: their scores without a call
                    raw = outputs[scores_at]
                    scores = seen.get(raw.tobytes()) or scores_of(raw)
                else:
                    scores = scores_of(outputs[scores_at])
                if ood is None:
                    score = None
                elif guard_at is not None:  # the model computed it: one float32 to read
                    score = outputs[guard_at][0]
                else:  # a model converted before the guard moved into it
                    score = ood.score(features_of(np.asarray(outputs[features_at])))
            finally:
                release()
            return record(scores, ms, frame, None if score is None else score <= threshold, score)
        return predict

    def reading_rules(self) -> IntendedUse | None:
        """The intended use a DICOM is checked against before decoding; None once it is ignored."""
        return None if self.intended_use_ignored else self.contract.intended_use

    def frames(self, source) -> list[Frame]:
        """Decode a path, array or Frame by the contract's reader policy (frame selection included); a DICOM
        outside the intended use raises Rejected."""
        return read(source, self.contract.preprocess, self.reading_rules(), self.decode_size())

    def decode_size(self) -> tuple[int, int] | None:
        """The size a DICOM may be decoded down to (the model's input), or None for full decoding."""
        return None if self.full_decode else (self._in_spec.height, self._in_spec.width)

    def predict(self, image_or_path, heatmap: bool = False) -> Prediction:
        """Classify one image (path, HxW[xC] array of display values, or Frame); with ``heatmap``, also its
        class activation map, peak and box."""
        frames = self.frames(image_or_path)
        if len(frames) != 1:
            raise InputError(frames[0].file, f"holds {len(frames)} frames under the frame policy 'all'; "
                                             "use predict_many to get one result per frame")
        return self.predict_frame(frames[0], heatmap)

    def predict_many(self, images: Iterable, heatmap: bool = False) -> Iterator[Prediction]:
        """One Prediction per image, and per frame for multi-frame DICOMs; bad input raises InputError."""
        for source in images:
            for frame in self.frames(source):
                yield self.predict_frame(frame, heatmap)

    def predict_input(self, x: np.ndarray) -> Prediction:
        """Classify an input already prepared by ``prepare`` (batch 1, the model's dtype)."""
        return self._predict(x, None)

    def predict_frame(self, frame: Frame, heatmap: bool = False, x: np.ndarray | None = None) -> Prediction:
        """Classify a decoded frame (``x``: its prepared input, when already made)."""
        x = self.prepare(frame) if x is None else x
        if not heatmap:
            return self._predict(x, frame)
        scores, features, guard, fmap, ms = self.explain(x)
        drawn = self.heatmap_of(scores, features, fmap, frame.image_size)
        return self.result(scores, ms, frame, guard)._replace(heatmap=drawn.image, peak=drawn.peak, box=drawn.box)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load(model: str | os.PathLike | bytes, backend: str = "auto", threads: int | None = None,
         device: str | None = None) -> Model:
    """Load a medlite ``.tflite`` (a path, or its bytes) on ``backend`` ("auto", "edgetpu", "gpu" or "cpu").

    "auto" tries the Edge TPU, the GPU, then the CPU, and records in
    ``Model.attempts`` why each one before the winner was passed over. A named
    backend that cannot run raises BackendUnavailable with its reason.
    ``threads`` sets the CPU interpreter's threads (None: LiteRT's default);
    ``device`` picks an Edge TPU (``usb:0``, ``pci:0``). An Edge TPU build
    (``*_edgetpu.tflite``) stands for the plain model shipped beside it, which
    the other backends run; the Edge TPU plug-in finds the build again there.
    """
    if backend != "auto" and backend not in backends.BY_NAME:
        raise ValueError(f"backend {backend!r} is not one of auto, {', '.join(backends.NAMES)}")
    path, data = _source(model)
    options = Options(threads=threads, device=device, path=path)
    contract = read_contract(data, path)
    chain = backends.CHAIN if backend == "auto" else (backends.BY_NAME[backend],)
    attempts: list[Attempt] = []
    for b in chain:
        try:
            session = b.open(data, options)
        except Exception as e:  # a backend's failure is a reason to try the next, never a crash
            attempts.append(Attempt(b.NAME, False, str(e) if isinstance(e, RuntimeError)
                                    else f"{type(e).__name__}: {e}"))
            continue
        attempts.append(Attempt(b.NAME, True))
        return Model(path, data, contract, session, tuple(attempts), sha256_bytes(data))
    if len(attempts) == 1:
        raise BackendUnavailable(attempts[0].backend, attempts[0].reason)
    raise BackendUnavailable(backend, "; ".join(f"{a.backend}: {a.reason}" for a in attempts))


def _source(model: str | os.PathLike | bytes) -> tuple[str | None, bytes]:
    """(path, bytes) of the model to load: an Edge TPU build is swapped for the plain model beside it."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return None, bytes(model)
    path = os.fspath(model)
    if edgetpu.is_build_path(path) and os.path.exists(edgetpu.plain_path(path)):
        path = edgetpu.plain_path(path)
    return path, _read_model(path)


def _read_model(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ModelError(path, "no such model file") from None
    except IsADirectoryError:
        raise ModelError(path, "is a folder; pass a .tflite file") from None
