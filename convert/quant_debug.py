"""Per-layer int8 error, from TensorFlow's quantization debugger, and int8 with the worst layers left in float."""

from __future__ import annotations

import csv
import io
import warnings

import numpy as np

from ..train.tf import quiet, quiet_stderr, tf
from .export import converter_for, representative


def _debugger(model, calibration: np.ndarray, n: int, seed: int, denylist=()):
    c = converter_for(model, model.input_shape[1:])
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = representative(calibration, n, seed)
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(denylist) or None)
    return tf.lite.experimental.QuantizationDebugger(converter=c, debug_dataset=representative(calibration, n, seed),
                                                     debug_options=options)


def layer_errors(model, calibration: np.ndarray, n: int = 100, seed: int = 0) -> list[dict]:
    """Every quantized layer's error on real images, worst (highest mean squared error) first."""
    with quiet_stderr(quiet()), warnings.catch_warnings():
        # The debugger runs TensorFlow's own (deprecated) interpreter: its warning is not the user's concern.
        warnings.simplefilter("ignore", UserWarning)
        dbg = _debugger(model, calibration, n, seed)
        dbg.run()
    buf = io.StringIO()
    dbg.layer_statistics_dump(buf)
    rows = []
    for r in csv.DictReader(io.StringIO(buf.getvalue())):
        rows.append({"tensor": r["tensor_name"], "op": r["op_name"],
                     "mean_squared_error": float(r["mean_squared_error"]),
                     "max_abs_error": float(r["max_abs_error"]), "scale": float(r["scale"]),
                     # error relative to the quantization step: comparable across layers of different range
                     "rmse_over_scale": float(np.sqrt(float(r["mean_squared_error"])) / float(r["scale"]))})
    return sorted(rows, key=lambda r: r["rmse_over_scale"], reverse=True)


def int8_with_float_layers(model, calibration: np.ndarray, layers: list[str], n: int = 300, seed: int = 0) -> bytes:
    """An int8 model whose ``layers`` (output tensor names) stay in float; its input and output stay float."""
    with quiet_stderr(quiet()), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return bytes(_debugger(model, calibration, n, seed, denylist=layers).get_nondebug_quantized_model())
