"""One prediction's result: what an image (or a cine frame) was decided to be, and why."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class Prediction:
    """One image's (or one cine frame's) result, with scores dequantized to probabilities.

    Frozen: change a copy with ``dataclasses.replace``. Equality and repr leave out the arrays (the heatmap
    and the features), as the record does."""

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
    age_unchecked: bool = False  # the file gave no patient age to check against the intended use's ages
    # False: the image lies outside what the model was trained on (it is still scored); None: no detector
    in_distribution: bool | None = None
    ood_score: float | None = None  # the detector's distance; above the contract's threshold is out
    # With heatmap=True: the map of the finding (a binary model's positive class; a multi-class model's most
    # probable class other than "normal", or its decided class when it has no "normal") as uint8 at the input
    # image's own size, the (x, y) of its peak and the (x0, y0, x1, y1)
    # box around it, in its pixels.
    heatmap: np.ndarray | None = field(default=None, compare=False, repr=False)
    peak: tuple[int, int] | None = None
    box: tuple[int, int, int, int] | None = None
    heatmap_label: str | None = None  # the class the map shows
    # The fingerprint of the trusted key that signed the model, when it was loaded with trust.
    signed_by: str | None = None
    # With features=True: the penultimate features (float32), for validation and the guard's reference.
    features: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def score_array(self) -> np.ndarray:
        """The scores as float32, in the contract's label order."""
        return np.array(list(self.scores.values()), dtype=np.float32)

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
        elif self.age_unchecked:
            rec["intended_use"] = "patient age not in the file, not checked"
        if self.peak is not None:
            rec["peak"], rec["box"] = list(self.peak), list(self.box)
        if self.signed_by:
            rec["signed_by"] = self.signed_by
        return rec
