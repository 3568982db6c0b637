"""Keras model to TFLite bytes for each variant, with TensorFlow's own converter."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import numpy as np

from ..train.tf import keras, quiet, quiet_stderr, tf
from .errors import ConversionError
from .variants import VARIANTS

IO_TYPES = ("int8", "uint8")
# The variants table names op sets; these are TensorFlow's.
OPS = {"int8": tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
       "int16x8": tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8}


def layers_with_ops(model, op_types: set[str]) -> list[str]:
    """Names of the traced graph's nodes whose op is in ``op_types``; they carry the Keras layer's name."""
    spec = tf.TensorSpec([1, *model.input_shape[1:]], tf.float32)
    graph_def = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph.as_graph_def()
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    return sorted({n.name for n in nodes if n.op in op_types})


def _explain(variant: str, error: Exception, model) -> str:
    text = str(error)
    ops = sorted(set(re.findall(r"'(tfl?\.[A-Za-z0-9_]+)' op", text)))
    try:
        layers = layers_with_ops(model, {op.split(".", 1)[1] for op in ops})[:8]
    except Exception:  # naming the layer is a courtesy; the converter's own message still stands
        layers = []
    found = re.search(r"error: (.+)", text)
    first = found.group(1).strip() if found else (text.strip().splitlines() or [type(error).__name__])[0]
    what = "quantize" if VARIANTS[variant].optimize and not VARIANTS[variant].float16 else "convert"
    parts = [f"TensorFlow's converter could not {what} the model as {variant}"]
    if ops:
        parts.append(f"op(s) {', '.join(ops)}")
    if layers:
        parts.append(f"in {', '.join(layers)}")
    return "; ".join(parts) + f": {first[:400]}"


def cart_model(model, keep_softmax: bool = False) -> tuple[object, str, bool, tuple | None]:
    """The model to convert, the activation the runtime applies after it (in float), whether it also outputs
    the penultimate features (for the out-of-distribution guard), and the classifier head when the last
    feature map is a third output (for heatmaps): ``(model, activation, features, head)``.

    A model that ends in a softmax is cut before it: full-integer conversion would quantize the softmax's
    output to 1/256 steps and collapse the ranking of scores. With ``keep_softmax`` (a variant computing in
    float, whose softmax keeps the ranking) the softmax stays the scores output and the runtime applies
    nothing: the cart reads probabilities as they are. When the logits come from a dense layer on a flat
    feature vector, that vector becomes a second output; when that vector comes from global average pooling
    through dense layers (a ReLU after each hidden one), the pooled feature map becomes a third.
    """
    last = model.layers[-1]
    inner = getattr(last, "layer", last)  # quantization-aware training wraps every layer
    activation = getattr(getattr(inner, "activation", None), "__name__", "")
    if not (type(inner).__name__ == "Softmax" or (type(inner).__name__ == "Activation" and activation == "softmax")):
        return model, "none", False, None
    applied = "none" if keep_softmax else "softmax"
    # The layer may belong to several graphs (tfmot's stripping rebuilds the model around the same layers):
    # take the input it has in this model's own graph.
    for node in range(len(last.inbound_nodes)):
        logits = last.get_input_at(node)
        try:
            keras.Model(model.inputs, logits)
        except ValueError:  # "Graph disconnected": that node is another graph's
            continue
        scores = last.get_output_at(node) if keep_softmax else logits
        dense, dense_node, _ = logits._keras_history
        features = dense.get_input_at(dense_node)
        if not isinstance(features, (list, tuple)) and len(features.shape) == 2:
            found = _pooled_head(logits)
            if found is not None:
                fmap, head = found
                return (keras.Model(model.inputs, [scores, features, fmap], name=f"{model.name}_cart"), applied,
                        True, head)
            return keras.Model(model.inputs, [scores, features], name=f"{model.name}_cart"), applied, True, None
        return keras.Model(model.inputs, scores, name=f"{model.name}_cart"), applied, False, None
    return model, "none", False, None


# Layers a heatmap head may pass through between pooling and logits: identities at inference, or a ReLU.
_PASS = ("Dropout", "InputLayer")


def _dense_weights(layer) -> tuple[np.ndarray, np.ndarray]:
    """A dense layer's float kernel and bias, also through a quantization-aware wrapper (whose inner layer's
    kernel is then a symbolic tensor, the variables being the wrapper's)."""
    named = {w.name.rsplit("/", 1)[-1].split(":")[0]: w for w in layer.weights}
    return np.asarray(named["kernel"].numpy()), np.asarray(named["bias"].numpy())


def _pooled_head(logits) -> tuple[object, tuple] | None:
    """(the feature map that global average pooling reads, the dense layers from the pooling to ``logits``
    as HeadLayers), or None when the head is anything else."""
    from ..edge.heatmap import HeadLayer

    layers: list = []  # from the logits back: [kernel, bias, relu after]
    tensor, relu = logits, False
    while True:
        layer, node, _ = tensor._keras_history
        inner = getattr(layer, "layer", layer)
        kind = type(inner).__name__
        if kind == "GlobalAveragePooling2D":
            if not layers:
                return None
            fmap = layer.get_input_at(node)
            head = tuple(HeadLayer(np.asarray(k, np.float64), np.asarray(b, np.float64), r) for k, b, r in
                         reversed(layers))
            return (fmap, head) if len(head) <= 2 and (len(head) == 1 or head[0].relu) else None
        if kind == "Dense":
            act = getattr(getattr(inner, "activation", None), "__name__", "linear")
            if act not in ("linear", "relu") or not inner.use_bias:
                return None
            layers.append([*_dense_weights(layer), relu or act == "relu"])
            relu = False
        elif kind == "ReLU" and inner.max_value is None and not float(inner.negative_slope) and not inner.threshold:
            relu = True
        elif kind not in _PASS:
            return None
        tensor = layer.get_input_at(node)


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
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])  # one output, or a list
    # The converter saves what it is given as a SavedModel first. Given the Keras model, that is every layer's
    # Keras serialization (2-4 s a variant, more with QAT's or pruning's wrappers); given a module holding only
    # the weights, the saved graph is the same and so is every byte of the converted model
    # (tests/test_convert.py). The attribute is not `variables`: tf.Module derives that one.
    weights = tf.Module()
    weights.variables_ = list(model.variables)
    return tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], weights)


def convert(model, variant: str, *, calibration: np.ndarray | None = None, n_calibration: int = 1000,
            io_type: str = "int8", seed: int = 0) -> bytes:
    """TFLite bytes of ``model`` as ``variant``, with the converter settings of its entry in the variants table
    (QAT and pruned models arrive here already fine-tuned)."""
    v = VARIANTS[variant]
    if io_type not in IO_TYPES:
        raise ValueError(f"integer input/output type must be one of {IO_TYPES}, got {io_type!r}")
    c = converter_for(model, model.input_shape[1:])
    if v.optimize:
        c.optimizations = [tf.lite.Optimize.DEFAULT]
    if v.float16:
        c.target_spec.supported_types = [tf.float16]
    if v.calibrated:
        if calibration is None:
            raise ValueError(f"variant {variant} needs calibration images from the training data")
        c.representative_dataset = representative(calibration, n_calibration, seed)
    if v.ops != "builtins":
        c.target_spec.supported_ops = [OPS[v.ops]]
    if v.integer:
        c.inference_input_type = tf.int8 if io_type == "int8" else tf.uint8
        c.inference_output_type = c.inference_input_type
    try:
        with quiet_stderr(quiet()):  # the converter prints its settings from C++
            return bytes(c.convert())
    except Exception as e:  # the converter raises ConverterError and others; the model is what is wrong
        raise ConversionError(_explain(variant, e, model)) from None
