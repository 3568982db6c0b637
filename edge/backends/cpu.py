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
        self.input = TensorInfo(tuple(map(int, inp["shape"])), np.dtype(inp["dtype"]), quantization(inp))
        self.outputs = tuple(TensorInfo(tuple(map(int, o["shape"])), np.dtype(o["dtype"]), quantization(o))
                             for o in outs)
        # Views on the interpreter's own output buffers, made once: this session never resizes or reallocates
        # after allocate_tensors, so they stay valid, and run copies what it was asked for out of them.
        self._views = tuple(interpreter.tensor(i)() for i in self._outs)
        self._set_tensor, self._invoke = interpreter._interpreter.SetTensor, interpreter._interpreter.Invoke

    def run(self, x: np.ndarray, wanted: tuple[int, ...] | None = None) -> list[np.ndarray | None]:
        # The wrapped interpreter's own calls: LiteRT's Python invoke() refuses to run while a view on an output
        # lives (a reallocation would leave it dangling), which cannot happen here.
        try:
            self._set_tensor(self._in, x)  # LiteRT checks the shape and type
        except ValueError:
            raise ValueError(f"input is {np.shape(x)} {np.asarray(x).dtype}; the model takes {self.input.shape} "
                             f"{self.input.dtype}") from None
        self._invoke()
        keep = range(len(self._views)) if wanted is None else wanted
        out: list[np.ndarray | None] = [None] * len(self._views)
        for k in keep:
            out[k] = self._views[k].copy()
        return out


def open(model: bytes, options: Options) -> CpuSession:  # noqa: A001 - the plug-in verb, as in pydicom
    foreign = custom_ops(model)
    if foreign:
        raise RuntimeError(f"the model holds custom op(s) {', '.join(foreign)} that LiteRT's CPU interpreter "
                           "cannot run (an Edge TPU build needs the plain model beside it)")
    with quiet_stderr(quiet()):  # LiteRT announces its XNNPACK delegate on standard error
        return CpuSession(runtime().Interpreter(model_content=model, num_threads=options.threads))
