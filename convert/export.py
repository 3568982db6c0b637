"""Keras model to TFLite bytes for each variant, with TensorFlow's own converter."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import numpy as np

from medlite.edge.errors import MedliteError
from medlite.edge.variants import VARIANTS
from medlite.train.tf import tf

IO_TYPES = ("int8", "uint8")


class ConversionError(MedliteError, RuntimeError):
    """TensorFlow's converter refused the model; the message names the ops and layers it reported."""


def _explain(variant: str, error: Exception) -> str:
    text = str(error)
    ops = sorted(set(re.findall(r"'(tfl?\.[A-Za-z0-9_]+)' op", text)))
    layers = sorted(set(re.findall(r'loc\((?:callsite\()?"([^"@]+)', text)))[:8]
    first = next((line.strip() for line in text.splitlines() if "error:" in line), text.strip().splitlines()[0]
                 if text.strip() else type(error).__name__)
    what = "quantize" if VARIANTS[variant].calibrated or variant == "dynamic" else "convert"
    parts = [f"TensorFlow's converter could not {what} the model as {variant}"]
    if ops:
        parts.append(f"op(s) {', '.join(ops)}")
    if layers:
        parts.append(f"at layer(s) {', '.join(layers)}")
    return "; ".join(parts) + f": {first[:400]}"


def representative(images: np.ndarray, n: int, seed: int = 0) -> Callable[[], Iterator[list[np.ndarray]]]:
    """Calibration samples: ``n`` real training images, drawn with a fixed seed."""
    if len(images) == 0:
        raise ValueError("calibration needs real training images and none were given")
    idx = np.random.default_rng(seed).permutation(len(images))[: min(n, len(images))]

    def gen():
        for i in idx:
            yield [images[i : i + 1].astype(np.float32)]

    return gen


def converter_for(model, input_shape) -> "tf.lite.TFLiteConverter":
    """A converter over a batch-1, static-shape signature (the Edge TPU needs static shapes)."""
    spec = tf.TensorSpec([1, *input_shape], tf.float32, name="image")
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], model)


def convert(model, variant: str, *, calibration: np.ndarray | None = None, n_calibration: int = 300,
            io_type: str = "int8", seed: int = 0) -> bytes:
    """TFLite bytes of ``model`` as ``variant`` (fp32, fp16, dynamic, int8, int16x8; QAT and pruned
    models arrive here already fine-tuned and convert as int8)."""
    v = VARIANTS[variant]
    if io_type not in IO_TYPES:
        raise ValueError(f"integer input/output type must be one of {IO_TYPES}, got {io_type!r}")
    c = converter_for(model, model.input_shape[1:])
    if variant == "fp16":
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        c.optimizations = [tf.lite.Optimize.DEFAULT]
    elif v.calibrated:
        if calibration is None:
            raise ValueError(f"variant {variant} needs calibration images from the training data")
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = representative(calibration, n_calibration, seed)
        if variant == "int16x8":
            c.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        else:
            c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            c.inference_input_type = tf.int8 if io_type == "int8" else tf.uint8
            c.inference_output_type = c.inference_input_type
    try:
        return bytes(c.convert())
    except Exception as e:  # the converter raises ConverterError and others; the model is what is wrong
        raise ConversionError(_explain(variant, e)) from None
