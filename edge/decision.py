"""The one rule that turns class scores into a decision; the runtime, the metrics and the bench all call it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def thresholded(contract) -> bool:
    """Whether the contract decides by a threshold on its positive class (a binary model with both set)."""
    return contract.positive_index is not None and contract.threshold is not None and len(contract.labels) == 2


def decide(scores, contract) -> np.ndarray:
    """The index of the decided label for each row of ``scores`` (N x classes), or for one score vector.

    A binary model with a positive class and a threshold decides positive when that class's score meets
    the threshold, and the other label otherwise; any other model decides its highest score.
    ``contract`` needs ``labels``, ``positive_index`` and ``threshold`` (a ``Contract``).
    """
    s = np.asarray(scores)
    rows = s if s.ndim == 2 else s[None]
    pos, threshold = contract.positive_index, contract.threshold
    if thresholded(contract):
        out = np.where(rows[:, pos] >= threshold, pos, 1 - pos)
    else:
        out = rows.argmax(1)
    return out if s.ndim == 2 else out[0]


def decider(contract) -> Callable[[list[float]], int]:
    """``decide`` for one score vector given as Python floats holding float32 values, built once per model:
    the same rule without numpy's cost per call. numpy compares a float32 score with the threshold rounded
    to float32 (NEP 50), so the threshold is rounded here too: a score equal to it decides alike."""
    pos, threshold = contract.positive_index, contract.threshold
    if thresholded(contract):
        at, other = float(np.float32(threshold)), 1 - pos
        return lambda s: pos if s[pos] >= at else other
    return lambda s: max(range(len(s)), key=s.__getitem__)  # the first highest, as argmax
