"""One prediction's result, and the function that builds it on the runtime's hot path."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from .decision import decider, thresholded
from .frames import Frame


@dataclass(frozen=True)
class Prediction:
    """One image's (or one cine frame's) result, with scores dequantized to probabilities."""

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
    heatmap: np.ndarray | None = field(default=None, repr=False, compare=False)
    peak: tuple[int, int] | None = None
    box: tuple[int, int, int, int] | None = None

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


def recorder(model) -> Callable[..., Prediction]:
    """``record(scores, latency_ms, frame, in_distribution, ood_score)`` for a loaded ``Model``: the frozen
    Prediction, filled in directly from a template of the fields that are the same in every call (the
    dataclass's own __init__ sets its 17 fields one object.__setattr__ at a time)."""
    contract = model.contract
    labels, decide, pos = contract.labels, decider(contract), contract.positive_index
    binary, new, set_dict = thresholded(contract), object.__new__, object.__setattr__
    pair = len(labels) == 2  # two labels: their scores as a dict literal, cheaper than dict(zip(...))
    first, second = labels[:2] if pair else (None, None)
    template = dict.fromkeys(f.name for f in fields(Prediction))  # every field, in the dataclass's order
    template.update(threshold=contract.threshold, backend=model.backend, model_sha256=model.sha256)

    def record(scores: Sequence[float], latency_ms: float, frame: Frame | None, in_distribution: bool | None,
               ood_score: float | None) -> Prediction:
        index = decide(scores)
        values = template.copy()
        values["label"], values["latency_ms"] = labels[index], latency_ms
        values["scores"] = {first: scores[0], second: scores[1]} if pair else dict(zip(labels, scores))
        if pos is not None:
            values["score"] = scores[pos]
            values["positive"] = index == pos if binary else None
        if frame is not None:
            values["file"], values["frame"], values["sop_instance_uid"] = frame.file, frame.frame, \
                frame.sop_instance_uid
        values["in_distribution"], values["ood_score"] = in_distribution, ood_score
        values["intended_use_ignored"] = model.intended_use_ignored  # set after loading, by the command line
        p = new(Prediction)
        set_dict(p, "__dict__", values)
        return p
    return record
