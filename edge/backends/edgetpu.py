"""Coral Edge TPU backend: an Edge TPU build of the model through the ``libedgetpu`` delegate.

``edgetpu_compiler`` writes ``NAME_edgetpu.tflite`` beside ``NAME.tflite``; the
plain model always ships with it, since nothing else can run the build. Given
the plain file, this backend runs the build beside it when there is one.
Device selection follows Coral's syntax (``Options.device``).
"""

from __future__ import annotations

import ctypes.util
import os
import platform
from pathlib import Path

from ..contract import read_contract
from ..errors import ModelError
from ..tflite_file import custom_ops
from .cpu import CpuSession
from .litert import runtime
from .session import Options

NAME = "edgetpu"
LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}.get(
    platform.system(), "libedgetpu.so.1")
SUFFIX = "_edgetpu.tflite"
CUSTOM_OP = "edgetpu-custom-op"


class EdgeTpuSession(CpuSession):
    backend = NAME


def is_build_path(path: str | None) -> bool:
    """Whether ``path`` names an Edge TPU build (``*_edgetpu.tflite``)."""
    return bool(path) and str(path).endswith(SUFFIX)


def plain_path(path: str) -> str:
    """The plain model that ships beside the Edge TPU build at ``path``."""
    return path[: -len(SUFFIX)] + ".tflite"


def _delegate(device: str | None):
    """The Edge TPU delegate, or RuntimeError saying what to install or connect."""
    install = "install libedgetpu1-std from Coral's package repository and connect the accelerator"
    # LiteRT's Delegate object, when its library is missing, fails in a way that prints an ignored exception at
    # garbage collection: look for the library first, and call LiteRT only when there is one to load.
    if platform.system() == "Linux" and not ctypes.util.find_library("edgetpu"):
        raise RuntimeError(f"{LIBRARY} is not installed; {install}")
    try:
        return runtime().load_delegate(LIBRARY, {"device": device} if device else {})
    except (ValueError, OSError) as e:
        raise RuntimeError(f"{LIBRARY} could not be loaded or found no Edge TPU ({e}); {install}") from None


def is_available(options: Options) -> tuple[bool, str]:
    try:
        _delegate(options.device)
    except RuntimeError as e:
        return False, str(e)
    return True, ""


def _build_for(model: bytes, options: Options) -> bytes:
    """The Edge TPU build to run: ``model`` itself, or the ``*_edgetpu.tflite`` beside its file."""
    if CUSTOM_OP in custom_ops(model) or is_build_path(options.path):
        return model
    if options.path:
        beside = options.path[: -len(".tflite")] + SUFFIX if options.path.endswith(".tflite") else None
        if beside and os.path.exists(beside):
            build = Path(beside).read_bytes()
            try:
                read_contract(build, beside)  # the build is a file of its own: its digests are checked too
            except ModelError as e:
                raise RuntimeError(str(e)) from None
            return build
        raise RuntimeError(f"the model is not compiled for the Edge TPU (no {os.path.basename(beside or '')!r} "
                           "beside it; edgetpu_compiler writes one)")
    raise RuntimeError("the model is not compiled for the Edge TPU (edgetpu_compiler's build holds "
                       f"{CUSTOM_OP!r})")


def open(model: bytes, options: Options) -> EdgeTpuSession:  # noqa: A001 - the plug-in verb
    build = _build_for(model, options)
    return EdgeTpuSession(runtime().Interpreter(model_content=build, num_threads=options.threads,
                                                experimental_delegates=[_delegate(options.device)]))
