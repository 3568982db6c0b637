"""CPU backend: LiteRT's interpreter, whose default delegate is XNNPACK."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..tflite_file import custom_ops
from .litert import quantization, quiet, quiet_stderr, runtime
from .session import Options, Session, TensorInfo, flat

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
        # Zero-copy outputs: numpy views on the interpreter's own output buffers, made once. LiteRT's Python
        # invoke() refuses to run while such a view lives, since a reallocation would leave it dangling; this
        # session never resizes or reallocates after allocate_tensors, so it invokes the wrapped interpreter
        # directly and the views stay valid for its whole life.
        self._views = tuple(interpreter.tensor(i)() for i in self._outs)
        self._flat = tuple(flat(v) for v in self._views)  # the same buffers, for bind
        # The input is copied in by LiteRT's SetTensor, a checked memcpy: numpy's assignment into a view of
        # the input costs several microseconds more, its dtype-transfer code cold after every call.
        self._set_tensor, self._invoke = interpreter._interpreter.SetTensor, interpreter._interpreter.Invoke

    def _mismatch(self, x) -> ValueError:
        return ValueError(f"input is {np.shape(x)} {np.asarray(x).dtype}; the model takes {self.input.shape} "
                          f"{self.input.dtype}")

    def run(self, x: np.ndarray, wanted: tuple[int, ...] | None = None, copy: bool = True) -> list[np.ndarray | None]:
        try:
            self._set_tensor(self._in, x)
        except ValueError:
            raise self._mismatch(x) from None
        self._invoke()
        if not copy:
            return list(self._views)  # every output, in place: reading one costs nothing until it is read
        keep = range(len(self._views)) if wanted is None else wanted
        out: list[np.ndarray | None] = [None] * len(self._views)
        for k in keep:
            out[k] = self._views[k].copy()
        return out

    def bind(self, wanted: tuple[int, ...]) -> Callable[[np.ndarray], tuple]:
        set_tensor, index, invoke, outputs, mismatch = self._set_tensor, self._in, self._invoke, self._flat, \
            self._mismatch

        def call(x: np.ndarray) -> tuple:
            try:
                set_tensor(index, x)
            except ValueError:
                raise mismatch(x) from None
            invoke()
            return outputs  # every output, in place
        return call


def open(model: bytes, options: Options) -> CpuSession:  # noqa: A001 - the plug-in verb, as in pydicom
    foreign = custom_ops(model)
    if foreign:
        raise RuntimeError(f"the model holds custom op(s) {', '.join(foreign)} that LiteRT's CPU interpreter "
                           "cannot run (an Edge TPU build needs the plain model beside it)")
    with quiet_stderr(quiet()):  # LiteRT announces its XNNPACK delegate on standard error
        return CpuSession(runtime().Interpreter(model_content=model, num_threads=options.threads))
