"""The model zoo: small CNNs built only from ops that full-integer TFLite and the Edge TPU run.

Every builder is keyword-only, takes the input shape and number of classes,
ends in a softmax, and names its layers (the quantization debugger and the
Edge TPU readiness report speak of layers by name).
"""

from __future__ import annotations

from .tf import keras

L = keras.layers
# Faster than Keras' 0.99: small medical sets give few steps per epoch, and with 0.99 the moving
# statistics used at inference lag so far behind early on that every image gets the same score.
BN_MOMENTUM = 0.9


def _conv_bn(x, filters, kernel, stride, name, relu="relu"):
    x = L.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return L.ReLU(6.0 if relu == "relu6" else None, name=f"{name}_{relu}")(x)


def _head(x, num_classes, dropout):
    if dropout:
        x = L.Dropout(dropout, name="dropout")(x)
    x = L.Dense(num_classes, name="logits")(x)
    return L.Softmax(name="probs")(x)


def small_cnn(*, input_shape, num_classes, width=32, dense=128, dropout=0.3, stages=3, name="small_cnn"):
    """Conv/pool blocks (``stages`` of them, each doubling the width), then a dense layer (``dense=0``: none),
    the classic small classifier for 28-64 px images. From 96 px up a stride-2 stem halves the image first: a
    128 px image then costs about what a 64 px one does, and the last feature map (16x16 at 128 px with three
    stages) still locates a finding for a heatmap."""
    if stages < 1:
        raise ValueError(f"stages must be 1 or more, got {stages}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if min(input_shape[:2]) >= 96:
        x = _conv_bn(x, width, 3, 2, "stem")
    for i in range(stages):
        x = _conv_bn(x, width * 2**i, 3, 1, f"block{i + 1}a")
        x = _conv_bn(x, width * 2**i, 3, 1, f"block{i + 1}b")
        last = i == stages - 1
        x = L.GlobalAveragePooling2D(name="gap")(x) if last else L.MaxPooling2D(2, name=f"block{i + 1}_pool")(x)
    if dense:
        x = L.Dense(dense, name="dense")(x)
        x = L.ReLU(name="dense_relu")(x)
    return keras.Model(inputs, _head(x, num_classes, dropout), name=name)


def _make_divisible(v, divisor=8):
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


def _inverted_residual(x, expansion, filters, stride, name, kernel=3):
    in_ch = x.shape[-1]
    y = x
    if expansion != 1:
        y = _conv_bn(y, in_ch * expansion, 1, 1, f"{name}_expand", "relu6")
    y = L.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(y)
    y = L.ReLU(6.0, name=f"{name}_dw_relu6")(y)
    y = L.Conv2D(filters, 1, use_bias=False, name=f"{name}_project")(y)
    y = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_project_bn")(y)
    if stride == 1 and in_ch == filters:
        y = L.Add(name=f"{name}_add")([x, y])
    return y


# (expansion, channels, repeats, first stride) of MobileNetV2 (Sandler et al. 2018).
_MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                 (6, 320, 1, 1))


def mobilenet_v2(*, input_shape, num_classes, alpha=0.35, dropout=0.2, name="mobilenet_v2"):
    """MobileNetV2 with width multiplier ``alpha`` (0.35 to 1.0).

    Below 64 px the stem and the first downsampling stage keep stride 1, so a
    28 px image is not reduced to 1x1 before the last blocks.
    """
    if not 0.35 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0.35 and 1.0, got {alpha}")
    small = min(input_shape[:2]) < 64
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv_bn(inputs, _make_divisible(32 * alpha), 3, 1 if small else 2, "stem", "relu6")
    for s, (t, c, n, stride) in enumerate(_MOBILENET_V2):
        if small and s == 1:
            stride = 1
        for i in range(n):
            x = _inverted_residual(x, t, _make_divisible(c * alpha), stride if i == 0 else 1, f"b{s + 1}_{i + 1}")
    last = 1280 if not small else _make_divisible(1280 * alpha)
    x = _conv_bn(x, last, 1, 1, "top", "relu6")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, _head(x, num_classes, dropout), name=name)


# (kernel, expansion, channels, repeats, first stride) of each stage of EfficientNet-Lite0 and -Lite2 (Tan and
# Le 2019): Lite2 is Lite0 1.1 times wider and 1.2 times deeper, its stem and head kept. The Lite variants drop
# squeeze-and-excitation and swish for ReLU6, so full-integer TFLite and the Edge TPU run them whole.
EFFICIENTNET_LITE = {
    "efficientnet_lite0": ((3, 1, 16, 1, 1), (3, 6, 24, 2, 2), (5, 6, 40, 2, 2), (3, 6, 80, 3, 2),
                           (5, 6, 112, 3, 1), (5, 6, 192, 4, 2), (3, 6, 320, 1, 1)),
    "efficientnet_lite2": ((3, 1, 16, 1, 1), (3, 6, 24, 3, 2), (5, 6, 48, 3, 2), (3, 6, 88, 4, 2),
                           (5, 6, 120, 4, 1), (5, 6, 208, 5, 2), (3, 6, 352, 1, 1)),
}


def _efficientnet_lite(name, *, input_shape, num_classes, dropout=0.2, output_stride=8):
    """EfficientNet-Lite ``name``, the family that ImageNet weights fit (``medlite.train.imagenet``). Its input
    (0..1) is mapped to -1..1, as those weights expect. ``output_stride`` 8 keeps the last two downsampling
    stages at stride 1 (16 the last one), so a 128 px image's last feature map is 16x16 (8x8) rather than 4x4,
    fine enough for a heatmap."""
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = L.Rescaling(2.0, offset=-1.0, name="to_signed")(inputs)
    x = _conv_bn(x, 32, 3, 2, "stem", "relu6")
    b = 0
    for s, (k, t, c, n, stride) in enumerate(EFFICIENTNET_LITE[name]):
        if (output_stride <= 16 and s == 5) or (output_stride == 8 and s == 3):
            stride = 1
        for i in range(n):
            x = _inverted_residual(x, t, c, stride if i == 0 else 1, f"mb{b}", kernel=k)
            b += 1
    x = _conv_bn(x, 1280, 1, 1, "top", "relu6")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, _head(x, num_classes, dropout), name=name)


def efficientnet_lite0(**options):
    """EfficientNet-Lite0 (4.7 M weights with ImageNet's classifier): see ``_efficientnet_lite``."""
    return _efficientnet_lite("efficientnet_lite0", **options)


def efficientnet_lite2(**options):
    """EfficientNet-Lite2 (6.1 M weights with ImageNet's classifier): see ``_efficientnet_lite``."""
    return _efficientnet_lite("efficientnet_lite2", **options)


def _basic_block(x, filters, stride, name):
    y = _conv_bn(x, filters, 3, stride, f"{name}_a")
    y = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_b_conv")(y)
    y = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_b_bn")(y)
    if stride != 1 or x.shape[-1] != filters:
        x = L.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_short_conv")(x)
        x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_short_bn")(x)
    return L.ReLU(name=f"{name}_out")(L.Add(name=f"{name}_add")([x, y]))


def resnet(*, input_shape, num_classes, width=16, blocks=(2, 2, 2), dropout=0.2, name="resnet"):
    """A compact ResNet (He et al. 2016, the CIFAR-style 3-stage design) for small grey images."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv_bn(inputs, width, 3, 1, "stem")
    for s, n in enumerate(blocks):
        for i in range(n):
            x = _basic_block(x, width * 2**s, 2 if (i == 0 and s > 0) else 1, f"s{s + 1}_{i + 1}")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, _head(x, num_classes, dropout), name=name)


FAMILIES = {"small_cnn": small_cnn, "mobilenet_v2": mobilenet_v2, "resnet": resnet,
            "efficientnet_lite0": efficientnet_lite0, "efficientnet_lite2": efficientnet_lite2}


def build(family: str, *, input_shape, num_classes, **options):
    """Build a family by name; options are the builder's width options."""
    if family not in FAMILIES:
        import difflib

        close = difflib.get_close_matches(family, FAMILIES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model family {family!r} (choose from {', '.join(FAMILIES)}){hint}")
    return FAMILIES[family](input_shape=tuple(input_shape), num_classes=num_classes, **options)
