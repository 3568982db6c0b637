"""A model's raw scores output to the scores a prediction reports: dequantized, and the softmax a contract
asks for applied in float, to the same bits on every CPU."""

from __future__ import annotations

import math
from array import array

import numpy as np


def softmax(logits: list[float]) -> list[float]:
    """Softmax in float64 with libm's exp, element by element, rounded to float32 (as C casts double to
    float): numpy's vectorised exp differs between x86-64 and arm64 in the last bit, and a cart must give
    the scores the workstation validated, to the bit."""
    top = max(logits)
    e = [math.exp(v - top) for v in logits]
    total = math.fsum(e)
    return array("f", [v / total for v in e]).tolist()


def dequantize(raw: np.ndarray, quant: tuple[float, int] | None) -> np.ndarray:
    """An output flattened to float32 values: (code - zero point) x scale, or as it is when float."""
    raw = np.asarray(raw).reshape(-1)
    if quant is None:
        return raw.astype(np.float32, copy=False)
    scale, zero_point = quant
    return (raw.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)
