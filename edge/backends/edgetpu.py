"""Coral Edge TPU backend: a ``*_edgetpu.tflite`` model through the ``libedgetpu`` delegate.

Device selection follows Coral's syntax: ``usb``, ``usb:N``, ``pci``, ``pci:N``
or ``:N`` (the Nth Edge TPU of any kind); None takes the first one found.
"""

from __future__ import annotations

import platform
import re

from medlite.edge.backends.cpu import CpuSession
from medlite.edge.backends.litert import runtime

NAME = "edgetpu"
LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}.get(
    platform.system(), "libedgetpu.so.1")
DEVICE_SYNTAX = re.compile(r"^(usb|pci)?(:\d+)?$")
SUFFIX = "_edgetpu.tflite"


def is_edgetpu_model(path: str) -> bool:
    return str(path).endswith(SUFFIX)


def check_device(device: str | None) -> None:
    if device is not None and (not device or not DEVICE_SYNTAX.match(device)):
        raise ValueError(f"Edge TPU device {device!r} is not one of usb, usb:N, pci, pci:N, :N")


def _delegate(device: str | None):
    options = {"device": device} if device else {}
    return runtime().load_delegate(LIBRARY, options)


def is_available(device: str | None = None) -> tuple[bool, str]:
    check_device(device)
    try:
        _delegate(device)
    except RuntimeError as e:
        return False, str(e)
    except (ValueError, OSError) as e:
        return False, (f"{LIBRARY} could not be loaded or found no Edge TPU ({e}); install libedgetpu1-std "
                       "from Coral's package repository and connect the accelerator")
    return True, ""


def open_model(model: bytes, path: str, threads: int | None, device: str | None = None) -> CpuSession:
    check_device(device)
    session = CpuSession(runtime().Interpreter(model_content=model, num_threads=threads,
                                               experimental_delegates=[_delegate(device)]))
    session.backend = NAME
    return session
