"""CPU backend: LiteRT's interpreter, whose default delegate is XNNPACK."""

from __future__ import annotations

import numpy as np

from ..tflite_file import custom_ops
from .litert import quantization, quiet, quiet_stderr, runtime
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
        outs = interpreter.get_output_details()
        self._in, self._outs = inp["index"], [o["index"] for o in outs]
        self.input = TensorInfo(tuple(inp["shape"]), np.dtype(inp["dtype"]), quantization(inp))
        self.outputs = tuple(TensorInfo(tuple(o["shape"]), np.dtype(o["dtype"]), quantization(o)) for o in outs)

    def run(self, x: np.ndarray, wanted: tuple[int, ...] | None = None) -> list[np.ndarray | None]:
        self._interp.set_tensor(self._in, x)
        self._interp.invoke()
        # get_tensor copies; LiteRT's zero-copy views (tensor()) make the next invoke fail while one is alive,
        # so only the outputs asked for are copied (never a large feature map that no heatmap needs).
        if wanted is None:
            return [self._interp.get_tensor(i) for i in self._outs]
        out: list[np.ndarray | None] = [None] * len(self._outs)
        for k in wanted:
            out[k] = self._interp.get_tensor(self._outs[k])
        return out


def open(model: bytes, options: Options) -> CpuSession:  # noqa: A001 - the plug-in verb, as in pydicom
    foreign = custom_ops(model)
    if foreign:
        raise RuntimeError(f"the model holds custom op(s) {', '.join(foreign)} that LiteRT's CPU interpreter "
                           "cannot run (an Edge TPU build needs the plain model beside it)")
    with quiet_stderr(quiet()):  # LiteRT announces its XNNPACK delegate on standard error
        return CpuSession(runtime().Interpreter(model_content=model, num_threads=options.threads))
