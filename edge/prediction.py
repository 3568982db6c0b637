"""One prediction's result, and the function that builds it on the runtime's hot path."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from .decision import decider, thresholded
from .frames import Frame


class Prediction(NamedTuple):
    """One image's (or one cine frame's) result, with scores dequantized to probabilities.

    Frozen, and a named tuple rather than a dataclass so that the runtime builds it in one C call: after a
    small model's interpreter call the host's caches are cold, and a dataclass's per-field setup cost more
    than the rest of a prediction together (benchmarks/RESULTS.md, "What medlite adds to LiteRT"). Change a
    copy with ``_replace``; equality leaves out the heatmap (an array), as the record does."""

    label: str
    scores: dict[str, float]
    positive: bool | None  # the positive class's score meets the contract's threshold (binary models)
    score: float | None  # the positive class's score
    threshold: float | None
    backend: str
    latency_ms: float  # the interpreter call alone: input in, output out
    model_sha256: str
    file: str | None = None
    frame: int | None = None
    sop_instance_uid: str | None = None
    intended_use_ignored: bool = False  # the intended-use rules were overridden for this run
    # False: the image lies outside what the model was trained on (it is still scored); None: no detector
    in_distribution: bool | None = None
    ood_score: float | None = None  # the detector's distance; above the contract's threshold is out
    # With heatmap=True: the map of the decided class (the positive class of a binary model) as uint8 at the
    # input image's own size, the (x, y) of its peak and the (x0, y0, x1, y1) box around it, in its pixels.
    heatmap: np.ndarray | None = None
    peak: tuple[int, int] | None = None
    box: tuple[int, int, int, int] | None = None

    def __eq__(self, other) -> bool:
        if not isinstance(other, Prediction):
            return NotImplemented
        return self._compared() == other._compared()

    def __ne__(self, other) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # scores are a dict: a Prediction was never hashable

    def _compared(self) -> tuple:
        return self[:_HEATMAP] + self[_HEATMAP + 1:]

    def __repr__(self) -> str:
        return "Prediction(" + ", ".join(f"{k}={v!r}" for k, v in zip(self._fields, self) if k != "heatmap") + ")"

    def record(self) -> dict:
        """The ``ok`` result record (DESIGN.md, "Result records"): one line of ``predict``'s JSON Lines."""
        rec = {"file": self.file, "status": "ok", "label": self.label, "scores": self.scores,
               "positive": self.positive, "score": self.score, "threshold": self.threshold, "backend": self.backend,
               "latency_ms": self.latency_ms, "model_sha256": self.model_sha256,
               "in_distribution": self.in_distribution, "ood_score": self.ood_score}
        if self.frame is not None:
            rec["frame"] = self.frame
        if self.sop_instance_uid:
            rec["sop_instance_uid"] = self.sop_instance_uid
        if self.intended_use_ignored:
            rec["intended_use"] = "ignored"
        if self.peak is not None:
            rec["peak"], rec["box"] = list(self.peak), list(self.box)
        return rec


_HEATMAP = Prediction._fields.index("heatmap")


def recorder(model) -> Callable[..., Prediction]:
    """``record(scores, latency_ms, frame, in_distribution, ood_score)`` for a loaded ``Model``: the frozen
    Prediction, its fields written in one tuple in the class's order."""
    contract = model.contract
    labels, decide, pos = contract.labels, decider(contract), contract.positive_index
    binary, make = thresholded(contract), tuple.__new__
    pair = len(labels) == 2  # two labels: their scores as a dict literal, cheaper than dict(zip(...))
    first, second = labels[:2] if pair else (None, None)
    threshold, backend, sha256 = contract.threshold, model.backend, model.sha256

    def record(scores: Sequence[float], latency_ms: float, frame: Frame | None, in_distribution: bool | None,
               ood_score: float | None) -> Prediction:
        index = decide(scores)
        named = {first: scores[0], second: scores[1]} if pair else dict(zip(labels, scores))
        score = None if pos is None else scores[pos]
        file = number = uid = None
        if frame is not None:
            file, number, uid = frame.file, frame.frame, frame.sop_instance_uid
        # intended_use_ignored is read each call: the command line sets it after loading
        return make(Prediction, (labels[index], named, index == pos if binary else None, score, threshold, backend,
                                 latency_ms, sha256, file, number, uid, model.intended_use_ignored,
                                 in_distribution, ood_score, None, None, None))
    return record
