"""A backend's open model: one call in, raw output out. The runtime wraps it with contract logic."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: np.dtype
    quant: tuple[float, int] | None  # (scale, zero_point), None when float


class Session:
    """What every backend returns from ``open``: ``run`` takes a batch-1 input in the model's dtype."""

    backend: str
    input: TensorInfo
    output: TensorInfo

    def run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError
