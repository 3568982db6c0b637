"""CPU backend: LiteRT's interpreter, whose default delegate is XNNPACK."""

from __future__ import annotations

import numpy as np

from ..tflite_file import custom_ops
from .litert import quantization, runtime
from .session import Options, Session, TensorInfo

NAME = "cpu"


def is_available(options: Options) -> tuple[bool, str]:
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


def open(model: bytes, options: Options) -> CpuSession:  # noqa: A001 - the plug-in verb, as in pydicom
    foreign = custom_ops(model)
    if foreign:
        raise RuntimeError(f"the model holds custom op(s) {', '.join(foreign)} that LiteRT's CPU interpreter "
                           "cannot run (an Edge TPU build needs the plain model beside it)")
    return CpuSession(runtime().Interpreter(model_content=model, num_threads=options.threads))
