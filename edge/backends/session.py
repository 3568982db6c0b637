"""What every backend shares: the options it is opened with, and the session it returns."""

from __future__ import annotations

import re
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
    give), each a new array; with ``wanted``, only those outputs are read, the others are None."""

    backend: str
    input: TensorInfo
    outputs: tuple[TensorInfo, ...]

    def run(self, x: np.ndarray, wanted: tuple[int, ...] | None = None) -> list[np.ndarray | None]:
        raise NotImplementedError
