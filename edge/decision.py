"""The one rule that turns class scores into a decision; the runtime, the metrics and the bench all call it."""

from __future__ import annotations

from array import array

import numpy as np


def thresholded(contract) -> bool:
    """Whether the contract decides by a threshold on its positive class (a binary model with both set)."""
    return contract.positive_index is not None and contract.threshold is not None and len(contract.labels) == 2


def _float32(value: float) -> float:
    """``value`` rounded to float32, as a Python float (C's double-to-float cast, as numpy's)."""
    return array("f", [value])[0]


def decide(scores, contract) -> np.ndarray | int:
    """The index of the decided label for each row of ``scores`` (N x classes), or for one score vector.

    A binary model with a positive class and a threshold decides positive when that class's score meets
    the threshold, and the other label otherwise; a model with calibration weights decides the highest score
    times its class's weight (float64 products, the same bits in Python and numpy); any other model decides
    its highest score.
    Scores are compared as float32, as the model gives them (a threshold is rounded to float32 too, so a
    score equal to it decides alike wherever it comes from).
    ``contract`` needs ``labels``, ``positive_index``, ``threshold`` and ``calibration`` (a ``Contract``).
    Returns an int for one vector, an array of ints for rows.
    """
    pos = contract.positive_index
    binary = thresholded(contract)
    weights = None if binary else contract.calibration.get("weights")
    if isinstance(scores, list):  # one prediction's scores, Python floats holding float32 values, in Python
        if binary:  # (numpy's cost on two numbers is most of what medlite adds to a small model's call)
            return pos if scores[pos] >= _float32(contract.threshold) else 1 - pos
        if weights is not None:
            scores = [s * w for s, w in zip(scores, weights)]
        return max(range(len(scores)), key=scores.__getitem__)  # the first highest, as argmax
    s = np.asarray(scores, dtype=np.float32)
    if s.ndim == 1:
        return decide(s.tolist(), contract)
    if binary:
        return np.where(s[:, pos] >= np.float32(contract.threshold), pos, 1 - pos)
    if weights is not None:
        return (s.astype(np.float64) * np.asarray(weights, dtype=np.float64)).argmax(1)
    return s.argmax(1)
