"""Which LiteRT runtime is installed: ai_edge_litert preferred, tflite_runtime accepted on old carts."""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from importlib import metadata


@dataclass(frozen=True)
class Runtime:
    name: str  # "ai_edge_litert" or "tflite_runtime"
    version: str
    Interpreter: type
    load_delegate: object

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


@functools.cache
def runtime() -> Runtime:
    """The interpreter module to use; RuntimeError naming both packages when neither is installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate

        return Runtime("ai_edge_litert", metadata.version("ai-edge-litert"), Interpreter, load_delegate)
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter, load_delegate

        return Runtime("tflite_runtime", metadata.version("tflite-runtime"), Interpreter, load_delegate)
    except ImportError:
        raise RuntimeError("no LiteRT runtime installed: `pip install ai-edge-litert` "
                           "(or tflite-runtime on an old cart)") from None


def quantization(details: dict) -> tuple[float, int] | None:
    """(scale, zero_point) of a quantized tensor, None for a float one."""
    scale, zero_point = details.get("quantization", (0.0, 0))
    return (float(scale), int(zero_point)) if scale else None


def quiet() -> bool:
    """Whether the runtimes' own C++ log lines are hidden: TF_CPP_MIN_LOG_LEVEL above 0, as the ``medlite``
    command sets it unless ``--verbose``."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") not in ("", "0")


@contextlib.contextmanager
def quiet_stderr(hide: bool = True):
    """Standard error goes nowhere while C++ code that prints notes runs (LiteRT announcing XNNPACK, TensorFlow
    before absl is set up); Python's own errors still reach the user, raised after it is restored."""
    if not hide:
        yield
        return
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
