"""What every backend shares: the options it is opened with, and the session it returns."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# Coral's device syntax: usb, usb:N, pci, pci:N, or :N (the Nth Edge TPU of any kind).
DEVICE_SYNTAX = re.compile(r"^(usb|pci)?(:\d+)?$")


@dataclass(frozen=True)
class Options:
    """How to run a model; every backend takes the same object and uses what concerns it."""

    threads: int | None = None  # CPU interpreter threads; None: LiteRT's default
    device: str | None = None  # Edge TPU: usb, usb:N, pci, pci:N or :N; None: the first one found
    path: str | None = None  # the file the model came from, if any: the Edge TPU looks beside it for its build

    def __post_init__(self):
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if self.device is not None and (not self.device or not DEVICE_SYNTAX.match(self.device)):
            raise ValueError(f"Edge TPU device {self.device!r} is not one of usb, usb:N, pci, pci:N, :N")


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: np.dtype
    quant: tuple[float, int] | None  # (scale, zero_point), None when float


class Session:
    """What every backend's ``open`` returns: ``run`` takes a batch-1 input in the model's dtype and returns
    the outputs in the order of ``outputs`` (the scores, and the features and feature map a model may also
    give); with ``wanted``, only those outputs are read, the others are None. With ``copy=False`` a backend
    may return views on its own buffers, valid only until its next call (the caller reads them under its
    lock); the others return new arrays either way."""

    backend: str
    input: TensorInfo
    outputs: tuple[TensorInfo, ...]

    def run(self, x: np.ndarray, wanted: tuple[int, ...] | None = None, copy: bool = True) -> list[np.ndarray | None]:
        raise NotImplementedError

    def bind(self, wanted: tuple[int, ...]) -> Callable[[np.ndarray], Sequence]:
        """The call a prediction makes: ``call(x)`` runs one input and returns the outputs, each flattened to
        one dimension (the ``wanted`` ones at least; others may be None), as arrays or memoryviews whose
        ``tolist()`` gives Python numbers, valid until the next call (read them under the caller's lock)."""
        run = self.run

        def call(x: np.ndarray) -> list:
            return [None if o is None else flat(o) for o in run(x, wanted, False)]
        return call


def flat(a: np.ndarray) -> memoryview | np.ndarray:
    """``a`` as one dimension: a memoryview where Python reads its type (all but float16), since its tolist()
    and indexing are short loops in Python itself, where numpy's go through its dtype machinery."""
    a = a.reshape(-1)
    return a if a.dtype == np.float16 else memoryview(a)
