"""GPU backend: LiteRT's CompiledModel with the GPU accelerator.

LiteRT does not fall back by itself (``GPU | CPU`` raises "No adapters found"
without a GPU) and a failed GPU attempt has been seen to corrupt the heap of
the process that made it, so availability is probed once per model in a
short-lived child process; only a model that passed the probe is opened here.
"""

from __future__ import annotations

import concurrent.futures
import ctypes.util
import functools
import multiprocessing
import platform

import numpy as np

from medlite.edge.backends.litert import quantization
from medlite.edge.backends.session import Session, TensorInfo

NAME = "gpu"
PROBE_TIMEOUT_S = 120


def _static_reason() -> str:
    """Why the GPU accelerator cannot work here, found without touching it; "" when it may."""
    try:
        import ai_edge_litert.compiled_model  # noqa: F401
    except ImportError as e:
        return (f"LiteRT's CompiledModel API cannot be imported ({e}); it needs ai-edge-litert 2.x "
                "(not tflite-runtime) and ml_dtypes")
    if platform.machine() in ("aarch64", "arm64") and platform.system() == "Linux":
        try:
            with open("/proc/cpuinfo") as f:
                flags = f.read()
        except OSError:
            flags = ""
        if "asimddp" not in flags:
            return ("this arm64 CPU lacks the dotprod feature that LiteRT's GPU accelerator needs "
                    "(it dies with SIGILL on Cortex-A53/A72 class cores, LiteRT issue 5675)")
    if platform.system() == "Linux" and not ctypes.util.find_library("vulkan"):
        return "no Vulkan loader (libvulkan.so.1) on this machine; LiteRT's GPU accelerator needs it and a GPU driver"
    return ""


def _probe(path: str) -> str:
    """Runs in a child process: compile the model for the GPU and run it once; "" on success."""
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator

    try:
        cm = CompiledModel.from_file(path, hardware_accel=HardwareAccelerator.GPU)
        inputs, outputs = cm.create_input_buffers(0), cm.create_output_buffers(0)
        cm.run_by_index(0, inputs, outputs)
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return ""


@functools.cache
def probe(path: str) -> str:
    """Reason the GPU cannot run the model at ``path`` ("" when it can); cached per process."""
    reason = _static_reason()
    if reason:
        return reason
    ctx = multiprocessing.get_context("spawn")
    try:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
            return pool.submit(_probe, path).result(timeout=PROBE_TIMEOUT_S)
    except concurrent.futures.TimeoutError:
        return f"the GPU probe did not finish in {PROBE_TIMEOUT_S} s"
    except concurrent.futures.process.BrokenProcessPool:
        return "the GPU probe process crashed (signal in LiteRT's GPU accelerator); the GPU is not usable"


def is_available(path: str | None = None) -> tuple[bool, str]:
    reason = probe(path) if path else _static_reason()
    return (not reason), reason


class GpuSession(Session):
    backend = NAME

    def __init__(self, path: str):
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator

        self._cm = CompiledModel.from_file(path, hardware_accel=HardwareAccelerator.GPU)
        sig = self._cm.get_signature_by_index(0)
        key = sig.get("key", "") if isinstance(sig, dict) else ""
        inp = next(iter(self._cm.get_input_tensor_details(key).values()))
        out = next(iter(self._cm.get_output_tensor_details(key).values()))
        self.input = TensorInfo(tuple(inp["shape"]), np.dtype(inp["dtype"]), quantization(inp))
        self.output = TensorInfo(tuple(out["shape"]), np.dtype(out["dtype"]), quantization(out))
        self._n_out = int(np.prod(self.output.shape))
        self._inputs = self._cm.create_input_buffers(0)
        self._outputs = self._cm.create_output_buffers(0)

    def run(self, x: np.ndarray) -> np.ndarray:
        self._inputs[0].write(x)
        self._cm.run_by_index(0, self._inputs, self._outputs)
        return self._outputs[0].read(self._n_out, self.output.dtype).reshape(self.output.shape)


def open_model(model: bytes, path: str, threads: int | None, device: str | None = None) -> GpuSession:
    reason = probe(path)
    if reason:
        raise RuntimeError(reason)
    return GpuSession(path)
