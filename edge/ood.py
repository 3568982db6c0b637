"""The out-of-distribution guard: how far an input's features lie from the training images' features.

A Mahalanobis distance on the penultimate features of the converted model
itself, kept to the principal directions of the training features plus the
residual off them (an image the training set never varied along shows up in
the residual). Conversion writes the score into the model as float32 ops after
its features (convert/guard_graph.py), so the backend that runs the model runs
the guard too; the arithmetic here, in float64, fits the detector, is the
reference those ops are tested against, and guards a model converted before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .packing import pack as _pack
from .packing import unpack as _unpack


@dataclass(frozen=True)
class OodDetector:
    mean: np.ndarray  # D: the training features' mean
    components: np.ndarray  # k x D: their principal directions
    variances: np.ndarray  # k: the variance along each
    residual_variance: float  # mean variance off those directions
    threshold: float  # a score above it is out of distribution
    false_alarm_rate: float  # the share of validation images above the threshold, as chosen

    def __post_init__(self):
        # With d = features - mean, p = components @ d and e = d - components.T @ p (what lies off them):
        #   distance = sum(p^2 / variances) + |e|^2 / r,
        # positive terms only. (The shorter |d|^2 / r - |W d|^2 cancels to a part in a million, and with
        # components stored in float32 and a small r it is wrong by percents.) No kept variance is below the
        # residual's r; 1/r is the weight of a component if one were.
        object.__setattr__(self, "weights", np.minimum(1.0 / self.variances, 1.0 / self.residual_variance))
        object.__setattr__(self, "inv_residual", 1.0 / self.residual_variance)

    def score(self, features: np.ndarray) -> float:
        """Squared Mahalanobis distance per feature dimension (about 1 for a typical training image) of one
        feature vector (1-D; float32 values are taken exactly, in float64)."""
        d = features - self.mean  # float64, whatever the features' float type
        p = self.components.dot(d)
        e = d - p.dot(self.components)
        return (float((p * p).dot(self.weights)) + float(e.dot(e)) * self.inv_residual) / d.size

    def to_dict(self) -> dict:
        k, dim = self.components.shape
        return {"method": "mahalanobis", "features": dim, "components_kept": k, "mean": _pack(self.mean),
                "components": _pack(self.components), "variances": _pack(self.variances),
                "residual_variance": self.residual_variance, "threshold": self.threshold,
                "false_alarm_rate": self.false_alarm_rate}

    @classmethod
    def from_dict(cls, d: dict) -> "OodDetector":
        dim, k = int(d["features"]), int(d["components_kept"])
        return cls(_unpack(d["mean"], (dim,)), _unpack(d["components"], (k, dim)), _unpack(d["variances"], (k,)),
                   float(d["residual_variance"]), float(d["threshold"]), float(d["false_alarm_rate"]))


def fit(train: np.ndarray, val: np.ndarray, false_alarm_rate: float = 0.02, keep: int = 48) -> OodDetector:
    """Fit on training features (N x D); the threshold flags ``false_alarm_rate`` of the validation features."""
    mean = train.mean(0)
    centred = train - mean
    cov = centred.T @ centred / max(1, len(train) - 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    floor = max(float(values[0]) * 1e-6, 1e-12)  # dead ReLU units have no variance at all
    k = int(min(keep, len(values) - 1, (values > floor).sum()))
    rest = values[k:]
    residual = max(float(rest.mean()) if len(rest) else floor, floor)
    # The arrays rounded as the contract stores them (float32), so the threshold is set on the scores a cart gets.
    mean, components, variances = (np.asarray(a, np.float32).astype(np.float64)
                                   for a in (mean, vectors[:, :k].T, np.maximum(values[:k], floor)))
    probe = OodDetector(mean, components, variances, residual, np.inf, false_alarm_rate)
    scores = np.array([probe.score(f) for f in val])
    threshold = float(np.quantile(scores, 1 - false_alarm_rate))
    return OodDetector(probe.mean, probe.components, probe.variances, residual, threshold, false_alarm_rate)
