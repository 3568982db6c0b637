"""The cart runtime: load a medlite .tflite on the best backend present and classify images with it.

Thread safety: a ``Model`` may be shared between threads; each call to the
interpreter holds the model's lock, so calls are serialised. For parallel
inference load one ``Model`` per worker (the interpreter is not re-entrant).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from . import backends, signature
from .backends import edgetpu
from .backends.session import Options
from .contract import Contract, IntendedUse, read_contract
from .decision import decide, thresholded
from .errors import BackendUnavailable, InputError, ModelError
from .frames import Frame
from .heatmap import Cam, render
from .ood import OodDetector
from .prediction import Prediction
from .preprocess import prepare, quantize
from .readers import read
from .scores import dequantize, softmax

SCORES_KEPT = 4096  # distinct score codes of an 8-bit model whose scores are kept (a few KiB a thousand)


@dataclass(frozen=True)
class Attempt:
    """One backend tried while loading: whether it ran the model, and why not."""

    backend: str
    ok: bool
    reason: str = ""


class Model:
    """A loaded model; build it with ``load``. Its options are fixed when it is loaded."""

    def __init__(self, path: str | None, model_bytes: bytes, contract: Contract, session,
                 attempts: tuple[Attempt, ...], sha256: str, ignore_intended_use: bool = False,
                 full_decode: bool = False, signed_by: str | None = None):
        self.path = path
        self.contract = contract
        self.sha256 = sha256
        self.signed_by = signed_by  # the fingerprint of the trusted key that signed it, when loaded with trust
        self.attempts = attempts
        self.size_bytes = len(model_bytes)
        self._ignore_intended_use, self._full_decode = ignore_intended_use, full_decode
        self._session = session
        self._lock = threading.Lock()
        self._check_session(contract, session)
        outputs = session.outputs
        self._scores_at, self._features_at = contract.scores_output, contract.features_output
        self._ood = OodDetector.from_dict(contract.ood) if contract.ood and self._features_at is not None else None
        # The guard's score is an output of the model itself (convert/guard_graph.py); a model converted before
        # that has only the detector's parameters, and the host computes the score from the features.
        self._guard_at = None if self._ood is None else contract.ood.get("output")
        self._cam = Cam.from_dict(contract.heatmap) if contract.heatmap and self._features_at is not None else None
        self._quant = [o.quant for o in outputs]
        self._plain_outputs = (self._scores_at,) + (() if self._guard_at is None else (self._guard_at,))
        self._scores_by_codes: dict[bytes, list[float]] = {}  # see _scores
        self._binary = thresholded(contract)  # decided by a threshold on the positive class

    @property
    def backend(self) -> str:
        return self._session.backend

    @property
    def intended_use_ignored(self) -> bool:
        """DICOMs outside the intended use are run anyway (`--ignore-intended-use`); each result says so."""
        return self._ignore_intended_use

    @property
    def full_decode(self) -> bool:
        """Every DICOM is decoded at full resolution (`--full-decode`), not JPEG 2000 at a reduced level."""
        return self._full_decode

    @property
    def session(self):
        """The backend's session (``backends.session.Session``): for tests and tools that read raw outputs."""
        return self._session

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

    @property
    def has_heatmap(self) -> bool:
        """The model gives its last feature map, so a heatmap can be made (``heatmap=True``)."""
        return self._cam is not None

    def prepare(self, frame: Frame) -> np.ndarray:
        """A decoded frame to the exact input tensor (batch 1, model dtype)."""
        x = prepare(frame.pixels, self.contract.preprocess, self.contract.input, frame.file)
        return quantize(x[None], self.contract.input)

    def classify(self, x: np.ndarray, frame: Frame | None = None, heatmap: bool = False,
                 features: bool = False) -> Prediction:
        """The one inference path: a prepared input (batch 1, the model's dtype) through the session, its
        scores, the contract's decision, and the Prediction. ``frame`` names the input's file and gives the
        size a heatmap is drawn at (the input's own without it); ``features`` keeps the penultimate features
        in the Prediction."""
        if heatmap and self._cam is None:
            raise ModelError(self.path, "this model gives no feature map for a heatmap: its head is not global "
                                        "average pooling then dense layers, or it was converted before heatmaps")
        c = self.contract
        host_guard = self._ood is not None and self._guard_at is None
        read_features = features or heatmap or host_guard
        wanted = self._plain_outputs  # the scores, and the guard's score when the model computes it
        if read_features:
            wanted += (self._features_at,) + ((self._cam.output,) if heatmap else ())
        with self._lock:
            t0 = time.perf_counter()
            outputs = self._session.run(x, wanted)
            ms = (time.perf_counter() - t0) * 1e3
        scores = self._scores(outputs[self._scores_at])
        feats = dequantize(outputs[self._features_at], self._quant[self._features_at]) if read_features else None
        guard = None
        if self._guard_at is not None:
            guard = outputs[self._guard_at].item()
        elif host_guard:
            guard = self._ood.score(feats)
        index = decide(scores, c)
        pos = c.positive_index
        extra = {}  # what a plain prediction leaves at its defaults
        if frame is not None:
            extra.update(file=frame.file, frame=frame.frame, sop_instance_uid=frame.sop_instance_uid,
                         age_unchecked=frame.age_unchecked)
        if self.signed_by:
            extra["signed_by"] = self.signed_by
        if heatmap:
            shown = self._finding(scores, index)
            drawn = self._draw(outputs, feats, shown, frame)
            extra.update(heatmap=drawn.image, peak=drawn.peak, box=drawn.box, heatmap_label=c.labels[shown])
        if features:
            extra["features"] = feats
        return Prediction(
            label=c.labels[index], scores=dict(zip(c.labels, scores)),
            positive=(index == pos) if self._binary else None, score=None if pos is None else scores[pos],
            threshold=c.threshold, backend=self.backend, latency_ms=ms, model_sha256=self.sha256,
            intended_use_ignored=self.intended_use_ignored,
            in_distribution=None if guard is None else guard <= self._ood.threshold, ood_score=guard, **extra)

    def _scores(self, raw: np.ndarray) -> list[float]:
        """The scores output as Python floats holding float32 values: dequantized, the contract's softmax
        applied. An 8-bit output's scores depend on its few codes alone, so they are kept by codes: the same
        values, without the arithmetic (a small model's call is 0.1-0.2 ms, and each step after it counts)."""
        cached = raw.dtype.itemsize == 1
        if cached:
            key = raw.tobytes()
            if key in self._scores_by_codes:
                return self._scores_by_codes[key]
        quant = self._quant[self._scores_at]
        scores = raw.reshape(-1).tolist() if quant is None else dequantize(raw, quant).tolist()  # float: as it is
        if self.contract.activation == "softmax":
            scores = softmax(scores)
        if cached and len(self._scores_by_codes) < SCORES_KEPT:
            self._scores_by_codes[key] = scores
        return scores

    def _finding(self, scores: list[float], decided: int) -> int:
        """The class a heatmap shows: a binary model's positive class; for a model with a "normal" class, its
        most probable other class, so that the map shows the finding even where the decision is "normal";
        otherwise the decided class."""
        c = self.contract
        if c.positive_index is not None:
            return c.positive_index
        normal = [k for k, label in enumerate(c.labels) if label.strip().lower() == "normal"]
        if normal:
            return max((k for k in range(len(scores)) if k != normal[0]), key=scores.__getitem__)
        return decided

    def _draw(self, outputs: list, features: np.ndarray, cls: int, frame: Frame | None):
        """Class ``cls``'s activation map from one call's outputs, over the frame's image (or the input)."""
        fmap = outputs[self._cam.output]
        fmap = dequantize(fmap, self._quant[self._cam.output]).reshape(fmap.shape[-3:])
        c = self.contract
        size = frame.image_size if frame is not None else (c.input.height, c.input.width)
        return render(self._cam.class_map(fmap, features, cls), *size, c.preprocess.crop, self._cam.box_fraction)

    def ood_score(self, features: np.ndarray | None) -> tuple[bool | None, float | None]:
        """(in_distribution, score) of an input's features by the host's float64 arithmetic (the reference the
        model's own guard output is tested against); (None, None) for a model without a detector."""
        if self._ood is None or features is None:
            return None, None
        score = self._ood.score(features)
        return score <= self._ood.threshold, score

    def reading_rules(self) -> IntendedUse | None:
        """The intended use a DICOM is checked against before decoding; None once it is ignored."""
        return None if self.intended_use_ignored else self.contract.intended_use

    def decode_size(self) -> tuple[int, int] | None:
        """The size a DICOM may be decoded down to (the model's input), or None for full decoding."""
        return None if self.full_decode else (self.contract.input.height, self.contract.input.width)

    def frames(self, source) -> list[Frame]:
        """Decode a path, array or Frame by the contract's reader policy (frame selection included); a DICOM
        outside the intended use raises Rejected."""
        return read(source, self.contract.preprocess, self.reading_rules(), self.decode_size())

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

    def predict_frame(self, frame: Frame, heatmap: bool = False, x: np.ndarray | None = None) -> Prediction:
        """Classify a decoded frame (``x``: its prepared input, when already made)."""
        return self.classify(self.prepare(frame) if x is None else x, frame, heatmap)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load(model: str | os.PathLike | bytes, backend: str = "auto", threads: int | None = None,
         device: str | None = None, *, frames: str | int | None = None, ignore_intended_use: bool = False,
         full_decode: bool = False, trust: Iterable[str | os.PathLike | signature.Key] | None = None) -> Model:
    """Load a medlite ``.tflite`` (a path, or its bytes) on ``backend`` ("auto", "edgetpu", "gpu" or "cpu").

    "auto" tries the Edge TPU, the GPU, then the CPU, and records in
    ``Model.attempts`` why each one before the winner was passed over. A named
    backend that cannot run raises BackendUnavailable with its reason.
    ``threads`` sets the CPU interpreter's threads (None: LiteRT's default);
    ``device`` picks an Edge TPU (``usb:0``, ``pci:0``). An Edge TPU build
    (``*_edgetpu.tflite``) stands for the plain model shipped beside it, which
    the other backends run; the Edge TPU plug-in finds the build again there.

    How inputs are read is fixed here too: ``frames`` (a multi-frame DICOM's
    frames: "all", "middle" or an index; default the contract's),
    ``ignore_intended_use`` (DICOMs outside the intended use are run, and each
    result says so) and ``full_decode`` (JPEG 2000 at full resolution).

    With ``trust`` (public key files, or ``signature.Key``), the model must carry a
    valid signature by one of those keys (``NAME.tflite.sig`` beside it; an Edge
    TPU build and its plain model each their own); otherwise ``signature.Untrusted``
    is raised before the file is parsed. The key that signed is ``Model.signed_by``
    and every Prediction's. Without it (or with none), signatures are not read.
    """
    if backend != "auto" and backend not in backends.BY_NAME:
        raise ValueError(f"backend {backend!r} is not one of auto, {', '.join(backends.NAMES)}")
    keys = _keys(trust or ())
    path, data, build = _source(model)
    signed_by = _verify(path, data, build, keys) if keys else None
    options = Options(threads=threads, device=device, path=path)
    contract = read_contract(data, path)
    if frames is not None:
        contract = contract.replace(preprocess=dataclasses.replace(contract.preprocess, frames=frames))
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
        return Model(path, data, contract, session, tuple(attempts), sha256_bytes(data),
                     ignore_intended_use=ignore_intended_use, full_decode=full_decode, signed_by=signed_by)
    if len(attempts) == 1:
        raise BackendUnavailable(attempts[0].backend, attempts[0].reason)
    raise BackendUnavailable(backend, "; ".join(f"{a.backend}: {a.reason}" for a in attempts))


def signer(model: str | os.PathLike, trust: Iterable[str | os.PathLike | signature.Key]) -> str:
    """The fingerprint of the trusted key that signed a model file: the check ``load(..., trust=...)`` makes,
    for tools that check every model before loading any (``medlite bench``); signature.Untrusted otherwise."""
    path, data, build = _source(model)
    return _verify(path, data, build, _keys(trust))


def _keys(trust) -> list[signature.Key]:
    """Trusted keys from Keys or PEM public key files (ValueError for a file that is not one)."""
    return [k if isinstance(k, signature.Key) else signature.public_key(k) for k in trust]


def _source(model: str | os.PathLike | bytes) -> tuple[str | None, bytes, str | None]:
    """(path, bytes, Edge TPU build or None) of the model to load: an Edge TPU build is swapped for the plain
    model beside it."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return None, bytes(model), None
    path, build = os.fspath(model), None
    if edgetpu.is_build_path(path) and os.path.exists(edgetpu.plain_path(path)):
        path, build = edgetpu.plain_path(path), path
    return path, _read_model(path), build


def _verify(path: str | None, data: bytes, build: str | None, keys: list[signature.Key]) -> str:
    """The fingerprint of the trusted key that signed the model (and its Edge TPU build, which the accelerator
    reads from disk); signature.Untrusted when one of them is not signed by a trusted key."""
    if path is None:
        raise signature.Untrusted(None, "unsigned", "a model given as bytes has no signature beside it; load it "
                                                    "from its file to check it against the trusted keys")
    key = signature.verify(path, data, keys)
    if build is not None:
        signature.verify(build, _read_model(build), keys)
    return key.fingerprint


def _read_model(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ModelError(path, "no such model file") from None
    except IsADirectoryError:
        raise ModelError(path, "is a folder; pass a .tflite file") from None
