"""The out-of-distribution guard written into the converted model, as a float tail after its features.

The host needs no arithmetic of its own then: the interpreter (or the GPU) computes the guard's score in
the same call as the class scores, and it is one more output. The score is ``OodDetector.score``: with
d = features - mean, p = C d (the principal components) and e = d - C^T p (what lies off them),
score = (sum p^2 / var + |e|^2 / r) / D, positive terms only, which float32 holds well. (The earlier
|d|^2 / r - |W d|^2 cancels to a part in a million and needed float64.)

Ops, all float32: [DEQUANTIZE] SUB FULLY_CONNECTED BATCH_MATMUL SUB CONCATENATION MUL MUL SUM; both products
read the one k x D matrix of components. Their tensors are named ``medlite_guard/...`` so that the Edge TPU
readiness check knows them: on an Edge TPU they run on the CPU after the TPU's part, by design.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from ..edge.ood import OodDetector

PREFIX = "medlite_guard/"
OUTPUT_NAME = "ood_score"
_T = schema.TensorType
_OPS = schema.BuiltinOperator
# DEQUANTIZE's kernel version by the input's type (TFLite's op_version rules).
_DEQUANTIZE_VERSION = {_T.UINT8: 1, _T.INT8: 2, _T.INT16: 3, _T.FLOAT16: 3}


def guard_constants(detector: OodDetector) -> dict[str, np.ndarray]:
    """The float32 constants of the tail: the mean, the components, and the square root of each term's
    weight (the detector's own: its component weights, then 1/r for every value off them; all over D)."""
    dim = detector.mean.size
    scale = np.concatenate([detector.weights, np.full(dim, detector.inv_residual)]) / dim
    f32 = np.float32
    return {"mean": detector.mean.astype(f32), "components": detector.components.astype(f32),
            "scale": np.sqrt(scale).astype(f32)[None, :], "axis": np.array([1], np.int32)}


def append_guard(tflite: bytes, features_at: int, detector: OodDetector) -> tuple[bytes, int]:
    """``tflite`` with the guard's score (shape [1], float32) as a new last output; and that output's index."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    if len(model.subgraphs) != 1:
        raise ValueError(f"the guard is written into single-subgraph models; this one has {len(model.subgraphs)}")
    g = _Graph(model)
    feats = g.sub.tensors[g.sub.outputs[features_at]]
    dim = detector.mean.size
    if [int(v) for v in feats.shape] != [1, dim]:
        raise ValueError(f"the guard needs features of shape [1, {dim}]; the model's are {list(feats.shape)}")
    c = guard_constants(detector)
    k = c["components"].shape[0]
    f = g.sub.outputs[features_at]
    if feats.type != _T.FLOAT32:
        if feats.type not in _DEQUANTIZE_VERSION:
            raise ValueError(f"the guard cannot read features of type {feats.type}")
        f = g.op(_OPS.DEQUANTIZE, [f], "features", [1, dim], version=_DEQUANTIZE_VERSION[feats.type])
    d = g.op(_OPS.SUB, [f, g.const("mean", c["mean"])], "centred", [1, dim], options=schema.SubOptionsT())
    components = g.const("components", c["components"])
    p = g.op(_OPS.FULLY_CONNECTED, [d, components, -1], "projections", [1, k],
             options=schema.FullyConnectedOptionsT())
    back = g.op(_OPS.BATCH_MATMUL, [p, components], "projected", [1, dim], options=schema.BatchMatMulOptionsT())
    e = g.op(_OPS.SUB, [d, back], "residual", [1, dim], options=schema.SubOptionsT())
    concat = schema.ConcatenationOptionsT()
    concat.axis = 1
    terms = g.op(_OPS.CONCATENATION, [p, e], "terms", [1, k + dim], options=concat)
    scaled = g.op(_OPS.MUL, [terms, g.const("scale", c["scale"])], "scaled", [1, k + dim], options=schema.MulOptionsT())
    squared = g.op(_OPS.MUL, [scaled, scaled], "squared", [1, k + dim], options=schema.MulOptionsT())
    score = g.op(_OPS.SUM, [squared, g.const("axis", c["axis"])], OUTPUT_NAME, [1], options=schema.ReducerOptionsT())
    g.sub.outputs = [*g.sub.outputs, score]
    for sig in model.signatureDefs or []:
        out = schema.TensorMapT()
        out.name, out.tensorIndex = OUTPUT_NAME, score
        sig.outputs = [*(sig.outputs or []), out]
    builder = flatbuffers.Builder(len(tflite) + 4 * c["components"].size + 65536)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), len(g.sub.outputs) - 1


class _Graph:
    """Appends constant tensors and float32 ops to a model's only subgraph."""

    def __init__(self, model):
        self.model, self.sub = model, model.subgraphs[0]
        self.model.operatorCodes = list(model.operatorCodes or [])
        self.sub.tensors, self.sub.operators = list(self.sub.tensors), list(self.sub.operators)
        self.codes: dict[tuple[int, int], int] = {}

    def tensor(self, name: str, shape: list[int], type_: int = _T.FLOAT32, buffer: int = 0) -> int:
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = (PREFIX + name).encode(), np.array(shape, np.int32), type_, buffer
        self.sub.tensors.append(t)
        return len(self.sub.tensors) - 1

    def const(self, name: str, value: np.ndarray) -> int:
        b = schema.BufferT()
        b.data = np.frombuffer(np.ascontiguousarray(value).tobytes(), np.uint8)
        self.model.buffers.append(b)
        type_ = _T.INT32 if value.dtype == np.int32 else _T.FLOAT32
        return self.tensor(name, list(value.shape), type_, len(self.model.buffers) - 1)

    def op(self, code: int, inputs: list[int], name: str, shape: list[int], options=None, version: int = 1) -> int:
        key = (code, version)
        if key not in self.codes:
            oc = schema.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), version
            self.model.operatorCodes.append(oc)
            self.codes[key] = len(self.model.operatorCodes) - 1
        out = self.tensor(name, shape)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = self.codes[key], np.array(inputs, np.int32), np.array([out], np.int32)
        if options is not None:
            op.builtinOptionsType = getattr(schema.BuiltinOptions, type(options).__name__[:-1])
            op.builtinOptions = options
        self.sub.operators.append(op)
        return out
