"""GPU backend: LiteRT's CompiledModel with the GPU accelerator.

LiteRT does not fall back by itself (``GPU | CPU`` raises "No adapters found"
without a GPU) and a failed GPU attempt has been seen to corrupt the heap of
the process that made it, so availability is probed once per model in a
short-lived child process; only a model that passed the probe is opened here.
"""

from __future__ import annotations

import concurrent.futures
import ctypes.util
import hashlib
import multiprocessing
import platform
from pathlib import Path

import numpy as np

from .litert import quantization
from .session import Options, Session, TensorInfo

NAME = "gpu"
PROBE_TIMEOUT_S = 120


def _static_reason() -> str:
    """Why the GPU accelerator cannot work here, found without touching it; "" when it may. The cheap checks
    come first: importing LiteRT's CompiledModel (and ml_dtypes with it) takes most of a second, which every
    `medlite predict` on a machine without a GPU would otherwise pay before its first image."""
    if platform.machine() in ("aarch64", "arm64") and platform.system() == "Linux":
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            flags = ""
        if "asimddp" not in flags:
            return ("this arm64 CPU lacks the dotprod feature that LiteRT's GPU accelerator needs "
                    "(it dies with SIGILL on Cortex-A53/A72 class cores, LiteRT issue 5675)")
    if platform.system() == "Linux" and not ctypes.util.find_library("vulkan"):
        return "no Vulkan loader (libvulkan.so.1) on this machine; LiteRT's GPU accelerator needs it and a GPU driver"
    try:
        import ai_edge_litert.compiled_model  # noqa: F401
    except ImportError as e:
        return (f"LiteRT's CompiledModel API cannot be imported ({e}); it needs ai-edge-litert 2.x "
                "(not tflite-runtime) and ml_dtypes")
    return ""


def _compiled(model: bytes):
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator

    return CompiledModel.from_buffer(model, hardware_accel=HardwareAccelerator.GPU)


def _probe(model: bytes) -> str:
    """Runs in a child process: compile the model for the GPU and run it once; "" on success."""
    try:
        cm = _compiled(model)
        inputs, outputs = cm.create_input_buffers(0), cm.create_output_buffers(0)
        cm.run_by_index(0, inputs, outputs)
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return ""


_PROBED: dict[str, str] = {}  # model SHA-256 -> the probe's reason ("" when the GPU ran it)


def _probe_in_child(model: bytes) -> str:
    ctx = multiprocessing.get_context("spawn")
    try:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
            return pool.submit(_probe, model).result(timeout=PROBE_TIMEOUT_S)
    except concurrent.futures.TimeoutError:
        return f"the GPU probe did not finish in {PROBE_TIMEOUT_S} s"
    except concurrent.futures.process.BrokenProcessPool:
        return "the GPU probe process crashed (signal in LiteRT's GPU accelerator); the GPU is not usable"


def probe(model: bytes) -> str:
    """Reason the GPU cannot run ``model`` ("" when it can); each model is probed once per process."""
    reason = _static_reason()
    if reason:
        return reason
    digest = hashlib.sha256(model).hexdigest()
    if digest not in _PROBED:
        _PROBED[digest] = _probe_in_child(model)
    return _PROBED[digest]


def is_available(options: Options) -> tuple[bool, str]:
    """Without a model file in ``options`` only what can be known without touching the GPU."""
    reason = probe(Path(options.path).read_bytes()) if options.path else _static_reason()
    return (not reason), reason


class GpuSession(Session):
    backend = NAME

    def __init__(self, model: bytes):
        self._model = model  # the compiled model reads from this buffer
        self._cm = _compiled(model)
        sig = self._cm.get_signature_by_index(0)
        key = sig.get("key", "") if isinstance(sig, dict) else ""
        inp = next(iter(self._cm.get_input_tensor_details(key).values()))
        outs = list(self._cm.get_output_tensor_details(key).values())
        self.input = TensorInfo(tuple(map(int, inp["shape"])), np.dtype(inp["dtype"]), quantization(inp))
        self.outputs = tuple(TensorInfo(tuple(map(int, o["shape"])), np.dtype(o["dtype"]), quantization(o))
                             for o in outs)
        self._inputs = self._cm.create_input_buffers(0)
        self._outputs = self._cm.create_output_buffers(0)

    def run(self, x: np.ndarray, wanted: tuple[int, ...] | None = None) -> list[np.ndarray | None]:
        self._inputs[0].write(x)
        self._cm.run_by_index(0, self._inputs, self._outputs)
        keep = range(len(self.outputs)) if wanted is None else wanted
        return [buf.read(int(np.prod(t.shape)), t.dtype).reshape(t.shape) if k in keep else None
                for k, (buf, t) in enumerate(zip(self._outputs, self.outputs))]


def open(model: bytes, options: Options) -> GpuSession:  # noqa: A001 - the plug-in verb
    reason = probe(model)
    if reason:
        raise RuntimeError(reason)
    return GpuSession(model)
