"""Edge TPU readiness: a static check of every op of a converted model against Coral's supported operations.

The table follows Coral's "TensorFlow models on the Edge TPU" page (supported
operations and their known limitations). The Edge TPU compiler partitions a
graph once: from the first op it cannot map, that op and every op after it run
on the CPU. Op versions are not modelled here; where ``edgetpu_compiler`` is on
the PATH its own log is run and compared, and it has the last word.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ai_edge_litert import schema_py_generated as schema

from .guard_graph import PREFIX as GUARD_PREFIX

# TFLite builtin op -> Coral's known limitation ("" when none). Ops absent here run on the CPU.
SUPPORTED = {
    "ADD": "", "AVERAGE_POOL_2D": "no fused activation", "CONCATENATION": "no fused activation",
    "CONV_2D": "same dilation in x and y", "DEPTHWISE_CONV_2D": "same dilation in x and y", "EXPAND_DIMS": "",
    "FULLY_CONNECTED": "default weights format; one-dimensional output", "L2_NORMALIZATION": "", "LOGISTIC": "",
    "LSTM": "unidirectional only", "MAXIMUM": "", "MAX_POOL_2D": "no fused activation",
    "MEAN": "no reduction over the batch dimension", "MINIMUM": "", "MUL": "", "PACK": "not along the batch",
    "PAD": "not along the batch", "PRELU": "alpha one-dimensional", "QUANTIZE": "",
    "REDUCE_MAX": "not over the batch", "REDUCE_MIN": "not over the batch", "RELU": "", "RELU6": "",
    "RELU_N1_TO_1": "", "RESHAPE": "large tensors may not map", "RESIZE_BILINEAR": "3-D input and output",
    "RESIZE_NEAREST_NEIGHBOR": "3-D input and output", "RSQRT": "", "SLICE": "", "SOFTMAX": "1-D input, up to 16,000 "
    "elements", "SPACE_TO_DEPTH": "", "SPLIT": "not along the batch", "SQUARED_DIFFERENCE": "", "SQUEEZE": "",
    "STRIDED_SLICE": "", "SUB": "", "SUM": "not over the batch", "TANH": "", "TRANSPOSE": "",
    "TRANSPOSE_CONV": "",
}
NO_FUSED_ACTIVATION = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"}
INT_TYPES = {schema.TensorType.INT8, schema.TensorType.UINT8, schema.TensorType.INT32}  # int32: biases
_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


@dataclass(frozen=True)
class OpVerdict:
    index: int
    op: str
    output: str  # the op's output tensor name, which carries the Keras layer name
    edgetpu: bool  # the static check predicts the Edge TPU runs it
    reason: str  # why not, or the known limitation to keep in mind


def _name(b) -> str:
    return b.decode() if isinstance(b, bytes) else (b or "")


def _op_name(code) -> str:
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == schema.BuiltinOperator.CUSTOM:
        return f"CUSTOM({_name(code.customCode)})"
    return _OP_NAMES.get(builtin, str(builtin))


def _problem(op, name: str, tensors, buffers) -> str:
    if name not in SUPPORTED:
        return f"{name} is not an Edge TPU operation"
    for t in [tensors[i] for i in (*op.inputs, *op.outputs) if i >= 0]:
        if t.type not in INT_TYPES:
            return f"tensor {_name(t.name)!r} is {_TYPE_NAMES.get(t.type, t.type)}, not 8-bit integer"
        sig = t.shapeSignature if t.shapeSignature is not None else t.shape
        if sig is not None and any(int(d) < 0 for d in sig):
            return f"tensor {_name(t.name)!r} has a dynamic shape {list(sig)}"
        shape = [int(d) for d in (t.shape if t.shape is not None else [])]
        constant = t.buffer > 0 and buffers[t.buffer].data is not None and len(buffers[t.buffer].data) > 0
        if not constant and len(shape) > 3 and any(d > 1 for d in shape[:-3]):
            return f"tensor {_name(t.name)!r} of shape {shape}: only the 3 innermost dimensions may exceed 1 (batch 1)"
    opts = op.builtinOptions
    if name in NO_FUSED_ACTIVATION and getattr(opts, "fusedActivationFunction", 0):
        return f"{name} with a fused activation"
    return ""


def check(tflite: bytes) -> dict:
    """Per-op verdicts, the predicted split point, and counts."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    if len(model.subgraphs) != 1:
        return {"ops": [], "split_at": 0, "mapped": 0, "cpu": 0, "guard_ops": 0,
                "summary": f"{len(model.subgraphs)} subgraphs: the Edge TPU compiles only single-subgraph models"}
    g = model.subgraphs[0]
    verdicts, split, guard = [], None, 0
    for i, op in enumerate(g.operators):
        name = _op_name(model.operatorCodes[op.opcodeIndex])
        out = _name(g.tensors[op.outputs[0]].name) if len(op.outputs) else ""
        if out.startswith(GUARD_PREFIX):  # the guard's float tail: the CPU runs it after the Edge TPU's part
            verdicts.append(OpVerdict(i, name, out, False, "the out-of-distribution guard, float32 on the CPU "
                                                           "by design"))
            guard += 1
            continue
        problem = _problem(op, name, g.tensors, model.buffers)
        if problem and split is None:
            split = i
        if split is not None and not problem:
            problem = f"after the split at op {split}: the compiler partitions once, so the rest runs on the CPU"
        verdicts.append(OpVerdict(i, name, out, not problem, problem or SUPPORTED.get(name, "")))
    mapped, model_ops = sum(v.edgetpu for v in verdicts), len(verdicts) - guard
    if split is None:
        summary = f"all {model_ops} ops of the model are predicted to run on the Edge TPU"
    else:
        first = verdicts[split]
        summary = (f"{mapped} of {model_ops} ops of the model on the Edge TPU; the graph splits at op {split} "
                   f"({first.op}, {first.output!r}): {first.reason.split(':')[0] if 'after' in first.reason else first.reason}")
    if guard:
        summary += f"; the out-of-distribution guard's {guard} float ops run on the CPU after them"
    return {"ops": [asdict(v) for v in verdicts], "split_at": split, "mapped": mapped, "cpu": model_ops - mapped,
            "guard_ops": guard, "summary": summary}


def compile_if_available(tflite_path: Path) -> dict:
    """Run ``edgetpu_compiler`` when it is on the PATH; write ``<name>_edgetpu.tflite`` beside the input."""
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        return {"compiler": None, "note": "edgetpu_compiler is not on the PATH (it runs on x86-64 Linux only); "
                                          "only the static readiness check was made"}
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([exe, "-s", "-o", tmp, str(tflite_path)], capture_output=True, text=True, timeout=600)
        produced = Path(tmp) / (tflite_path.stem + "_edgetpu.tflite")
        result = {"compiler": exe, "returncode": r.returncode, "log": r.stdout[-8000:] + r.stderr[-2000:]}
        if r.returncode == 0 and produced.exists():
            target = tflite_path.with_name(tflite_path.stem + "_edgetpu.tflite")
            shutil.copy(produced, target)
            result["file"] = target.name
        result["compiler_ops"] = parse_compiler_log(r.stdout)
    return result


def parse_compiler_log(log: str) -> list[dict]:
    """The compiler's "Operator  Count  Status" table as rows."""
    rows = []
    for line in log.splitlines():
        m = re.match(r"^([A-Z][A-Z0-9_]+)\s+(\d+)\s+(.+)$", line.strip())
        if m:
            rows.append({"op": m.group(1), "count": int(m.group(2)), "status": m.group(3).strip()})
    return rows


def compare_with_compiler(static: dict, compiler_ops: list[dict]) -> list[str]:
    """Ops whose mapped count differs between the static prediction and the compiler's log."""
    predicted: dict[str, int] = {}
    for v in static["ops"]:
        if v["edgetpu"]:
            predicted[v["op"]] = predicted.get(v["op"], 0) + 1
    actual: dict[str, int] = {}
    for r in compiler_ops:
        if r["status"].startswith("Mapped to Edge TPU"):
            actual[r["op"]] = actual.get(r["op"], 0) + r["count"]
    return [f"{op}: predicted {predicted.get(op, 0)} on the Edge TPU, compiler mapped {actual.get(op, 0)}"
            for op in sorted(set(predicted) | set(actual)) if predicted.get(op, 0) != actual.get(op, 0)]


def markdown(variant: str, static: dict, compiled: dict) -> str:
    lines = [f"## Edge TPU readiness: {variant}", "", static["summary"], "", "| # | op | output | verdict |",
             "| ---: | --- | --- | --- |"]
    for v in static["ops"]:
        verdict = "Edge TPU" + (f" ({v['reason']})" if v["reason"] else "") if v["edgetpu"] else f"CPU: {v['reason']}"
        lines.append(f"| {v['index']} | {v['op']} | `{v['output']}` | {verdict} |")
    lines += ["", compiled.get("note") or f"edgetpu_compiler: exit {compiled.get('returncode')}, "
                                          f"wrote {compiled.get('file', 'nothing')}"]
    for d in compiled.get("differences", []):
        lines.append(f"- differs from the static check: {d}")
    return "\n".join(lines) + "\n"
