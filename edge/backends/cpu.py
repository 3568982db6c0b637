"""CPU backend: LiteRT's interpreter, whose default delegate is XNNPACK."""

from __future__ import annotations

import numpy as np

from medlite.edge.backends.litert import quantization, runtime
from medlite.edge.backends.session import Session, TensorInfo

NAME = "cpu"


def is_available() -> tuple[bool, str]:
    try:
        runtime()
    except RuntimeError as e:
        return False, str(e)
    return True, ""


class CpuSession(Session):
    backend = NAME

    def __init__(self, interpreter):
        self._interp = interpreter
        self._interp.allocate_tensors()
        inp = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]
        self._in, self._out = inp["index"], out["index"]
        self.input = TensorInfo(tuple(inp["shape"]), np.dtype(inp["dtype"]), quantization(inp))
        self.output = TensorInfo(tuple(out["shape"]), np.dtype(out["dtype"]), quantization(out))

    def run(self, x: np.ndarray) -> np.ndarray:
        self._interp.set_tensor(self._in, x)
        self._interp.invoke()
        return self._interp.get_tensor(self._out)


def open_model(model: bytes, path: str, threads: int | None, device: str | None = None) -> CpuSession:
    rt = runtime()
    return CpuSession(rt.Interpreter(model_content=model, num_threads=threads))
