"""A model's raw scores output to the scores a prediction reports: dequantized, and the softmax a contract
asks for applied in float, to the same bits on every CPU."""

from __future__ import annotations

import math
from array import array

import numpy as np


def softmax(logits: list[float], pair: memoryview | None = None) -> list[float]:
    """Softmax in float64 with libm's exp, element by element, rounded to float32: numpy's vectorised exp
    differs between x86-64 and arm64 in the last bit, and a cart must give the scores the workstation
    validated, to the bit. ``pair``: two float32s (``float32_pair``) that two scores are rounded through, the
    caller's own and used under its lock; a new one when None."""
    if len(logits) == 2:  # the same bits for finite logits, written out: exp(0) is 1, and fsum of two is 1 + e
        pair = float32_pair() if pair is None else pair
        a, b = logits
        if a >= b:
            e = math.exp(b - a)
            total = 1.0 + e
            pair[0], pair[1] = 1.0 / total, e / total
        else:
            e = math.exp(a - b)
            total = 1.0 + e
            pair[0], pair[1] = e / total, 1.0 / total
        return pair.tolist()
    top = max(logits)
    e = [math.exp(v - top) for v in logits]
    total = math.fsum(e)
    return array("f", [v / total for v in e]).tolist()


def float32_pair() -> memoryview:
    """Two float32s as a memoryview: storing a Python float in it rounds it as C casts double to float (as
    array("f") does), in the memoryview code a prediction has just run to read its outputs, which is warm
    where struct's or array's is cold after the interpreter's call."""
    return memoryview(bytearray(8)).cast("f")


def dequantize(raw: np.ndarray, quant: tuple[np.float32, np.float32] | None) -> np.ndarray:
    """An output flattened to float32 values: (code - zero point) x scale, or as it is when float."""
    raw = raw.reshape(-1)
    if quant is None:
        return raw.astype(np.float32, copy=False)
    scale, zero_point = quant
    return (raw.astype(np.float32) - zero_point) * scale


def code_table(info, quant: tuple[np.float32, np.float32] | None) -> np.ndarray | None:
    """For an 8-bit quantized output: the dequantized float32 value of every code, as float64, in byte order,
    so that an int8 code indexes it directly (negative codes from the end); None for any other output."""
    if quant is None or info.dtype not in (np.int8, np.uint8):
        return None
    codes = np.arange(256, dtype=np.uint8).view(info.dtype)
    return dequantize(codes, quant).astype(np.float64)


def quant_of(q: tuple[float, int] | None) -> tuple[np.float32, np.float32] | None:
    """An output's quantization as float32 scalars, converted once rather than in every call."""
    return None if q is None else (np.float32(q[0]), np.float32(q[1]))
