"""Self-supervised pretraining: teach a model family's convolutional layers on unlabelled images, so that a
classifier trained on a few hundred labelled ones starts from features instead of noise.

Two methods, compared in benchmarks/RESULTS.md by cross-validation on small training sets:

- ``simclr`` (Chen et al. 2020): two random views of each image (crop and resize, flip, brightness, contrast,
  noise) are pulled together and pushed apart from the batch's other images (the NT-Xent loss), through a small
  projection head that is thrown away afterwards.
- ``restore`` (masked and denoising autoencoding, as Models Genesis does for medical images, Zhou et al. 2019):
  the encoder sees the image with random patches blanked and noise added, and a light decoder rebuilds the
  original from the encoder's last feature map.

The encoder is the family's own network up to its global pooling (the layer named ``gap``), so a classifier
built with the same options takes its weights layer by layer and converts to every variant as any model does.
An encoder folder holds ``encoder.weights.h5`` and ``encoder.json`` (what it fits: family, options, input).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from ..edge.errors import DataError
from ..edge.version import __version__
from .models import EFFICIENTNET_LITE, build
from .tf import keras, tf

METHODS = ("simclr", "restore")
DEFAULT_METHOD = "simclr"  # the better of the two in benchmarks/RESULTS.md
# Not learnt here: the ImageNet weights that a package ships for each EfficientNet-Lite (``imagenet.py``); the
# small-data recipe for large images takes the first.
IMAGENET, IMAGENET_FAMILIES = "imagenet", tuple(EFFICIENTNET_LITE)
IMAGENET_FAMILY = IMAGENET_FAMILIES[0]
WEIGHTS, INFO = "encoder.weights.h5", "encoder.json"
TEMPERATURE = 0.2  # NT-Xent: lower than SimCLR's 0.5, as its authors advise for small batches
PATCH = 16  # restore: the side of a blanked square, in pixels at the model's input
MASKED = 0.4  # restore: the share of squares blanked
MIN_IMAGES = 8  # a batch of 8 gives each SimCLR view 14 others to be told apart from


def backbone(model: "keras.Model") -> "keras.Model":
    """The model's layers up to its global pooling, sharing their weights with it."""
    return keras.Model(model.input, model.get_layer("gap").output, name="encoder")


def _views(x, rng):
    """One random view of each image in the batch (values about 0..1): a crop of 35-100% of the area resized
    back, a horizontal flip, brightness, contrast and noise. Flips are harmless here: the views only need to
    stay the same image, and the classifier's own augmentation keeps its anatomy rules."""
    n, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    area = rng.uniform((n,), 0.35, 1.0)
    aspect = tf.exp(rng.uniform((n,), math.log(3 / 4), math.log(4 / 3)))
    bh, bw = tf.minimum(tf.sqrt(area / aspect), 1.0), tf.minimum(tf.sqrt(area * aspect), 1.0)
    y0, x0 = rng.uniform((n,)) * (1 - bh), rng.uniform((n,)) * (1 - bw)
    boxes = tf.stack([y0, x0, y0 + bh, x0 + bw], axis=1)
    v = tf.image.crop_and_resize(x, boxes, tf.range(n), tf.stack([h, w]))
    flip = rng.uniform((n, 1, 1, 1)) < 0.5
    v = tf.where(flip, tf.reverse(v, axis=[2]), v)
    mean = tf.reduce_mean(v, axis=[1, 2, 3], keepdims=True)
    v = (v - mean) * rng.uniform((n, 1, 1, 1), 0.6, 1.4) + mean + rng.uniform((n, 1, 1, 1), -0.2, 0.2)
    return v + rng.normal(tf.shape(v), stddev=0.03)


def _nt_xent(a, b):
    """SimCLR's loss for a batch of paired projections: each view must pick its pair among 2N-1 others."""
    z = tf.math.l2_normalize(tf.concat([a, b], axis=0), axis=1)
    n = tf.shape(a)[0]
    sim = tf.matmul(z, z, transpose_b=True) / TEMPERATURE - tf.eye(2 * n) * 1e9  # no view is its own pair
    pairs = tf.concat([tf.range(n, 2 * n), tf.range(n)], axis=0)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(pairs, sim))


def _corrupt(x, rng):
    """Blank random PATCH squares (filled with the image's mean) and add noise: what ``restore`` undoes."""
    n, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    cells = rng.uniform((n, (h + PATCH - 1) // PATCH, (w + PATCH - 1) // PATCH, 1)) < MASKED
    mask = tf.image.resize(tf.cast(cells, tf.float32), (h, w), method="nearest")
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    return x * (1 - mask) + mean * mask + rng.normal(tf.shape(x), stddev=0.05)


def _decoder(features, shape):
    """Upsample the encoder's last feature map back to the input: a conv and a doubling per step."""
    L = keras.layers
    x = features
    steps = max(0, round(math.log2(shape[0] / features.shape[1])))
    width = features.shape[-1]
    for i in range(steps):
        width = max(16, width // 2)
        x = L.Conv2D(width, 3, padding="same", activation="relu", name=f"decoder{i + 1}_conv")(x)
        x = L.UpSampling2D(2, name=f"decoder{i + 1}_up")(x)
    x = L.Conv2D(shape[-1], 3, padding="same", name="decoder_out")(x)
    if tuple(x.shape[1:3]) != tuple(shape[:2]):
        x = L.Resizing(shape[0], shape[1], name="decoder_resize")(x)
    return x


def pretrain(x: np.ndarray, family: str, model_options: dict, *, method: str = "simclr", epochs: int = 60,
             batch_size: int = 64, learning_rate: float = 2e-3, seed: int = 0, progress=None
             ) -> tuple["keras.Model", list[float], float]:
    """Pretrain ``family``'s encoder on the unlabelled images ``x`` (N x H x W x C, the model's input).
    Returns (the classifier model whose encoder is trained, each epoch's loss, seconds).
    ``progress(epoch, epochs, loss)`` after each epoch."""
    if method not in METHODS:
        raise ValueError(f"pretraining method must be one of {', '.join(METHODS)}, got {method!r}")
    if len(x) < MIN_IMAGES:
        raise DataError(f"pretraining needs at least {MIN_IMAGES} images; got {len(x)}")
    keras.utils.set_random_seed(seed)
    model = build(family, input_shape=x.shape[1:], num_classes=2, **model_options)
    encoder = backbone(model)
    L = keras.layers
    if method == "simclr":
        h = L.Dense(128, activation="relu", name="projection1")(encoder.output)
        head = keras.Model(encoder.input, L.Dense(64, name="projection2")(h))
    else:
        head = keras.Model(encoder.input, _decoder(model.get_layer("gap").input, x.shape[1:]))
    batch = min(batch_size, len(x))
    steps = len(x) // batch  # whole batches only: NT-Xent's negatives are the batch
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps * epochs, alpha=0.01)
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=1e-4)
    rng = tf.random.Generator.from_seed(seed)

    @tf.function
    def step(xb):
        with tf.GradientTape() as tape:
            if method == "simclr":
                loss = _nt_xent(head(_views(xb, rng), training=True), head(_views(xb, rng), training=True))
            else:
                loss = tf.reduce_mean(tf.square(head(_corrupt(xb, rng), training=True) - xb))
        grads = tape.gradient(loss, head.trainable_variables)
        optimizer.apply_gradients(zip(grads, head.trainable_variables))
        return loss

    order = np.random.default_rng(seed)
    losses, t0 = [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        idx = order.permutation(len(x))
        total = sum(float(step(tf.constant(x[idx[i * batch:(i + 1) * batch]]))) for i in range(steps))
        losses.append(total / steps)
        if progress:
            progress(epoch, epochs, losses[-1])
    return model, losses, time.perf_counter() - t0


def encoder_for(x: np.ndarray, config, out: str | Path, progress=None, about: dict | None = None) -> Path:
    """Pretrain ``config.model`` with ``config.pretrain`` on the images ``x`` and save the encoder to ``out``,
    with ``about`` (where the images came from) in its encoder.json. ``imagenet`` reads its weights instead and
    uses only the images' shape."""
    if config.pretrain == IMAGENET:
        from .imagenet import imagenet_encoder  # it imports this module's ``save``

        return imagenet_encoder(out, x.shape[1:], config.model_options, about, family=config.model)
    model, losses, seconds = pretrain(x, config.model, config.model_options, method=config.pretrain,
                                      epochs=config.pretrain_epochs, batch_size=config.batch_size, seed=config.seed,
                                      progress=progress)
    return save(out, model, {"family": config.model, "model_options": config.model_options,
                             "input_shape": list(x.shape[1:]), "method": config.pretrain, "images": int(len(x)),
                             "epochs": config.pretrain_epochs, "final_loss": round(losses[-1], 5),
                             "seconds": round(seconds, 1), **(about or {})})


def save(out: str | Path, model: "keras.Model", info: dict) -> Path:
    """Write the encoder's weights and what it fits to the folder ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    backbone(model).save_weights(str(out / WEIGHTS))
    (out / INFO).write_text(json.dumps({**info, "medlite_version": __version__}, indent=2) + "\n")
    return out


def describe(folder: str | Path) -> dict:
    """An encoder folder's ``encoder.json``; a clear error where the folder is not an encoder."""
    folder = Path(folder)
    if not (folder / INFO).is_file() or not (folder / WEIGHTS).is_file():
        raise DataError(f"{folder}: not a pretrained encoder (it needs {INFO} and {WEIGHTS}; "
                        "`medlite pretrain` writes them)")
    return json.loads((folder / INFO).read_text())


def load_into(model: "keras.Model", folder: str | Path) -> None:
    """Give ``model`` the encoder's weights (the model must be the encoder's family, options and input)."""
    info = describe(folder)
    shape = list(model.input_shape[1:])
    if info["family"] != model.name or info["input_shape"] != shape:
        raise DataError(f"{folder}: the encoder was pretrained for {info['family']} at input {info['input_shape']}, "
                        f"not {model.name} at {shape}; train with its --model and --image-size")
    try:
        backbone(model).load_weights(str(Path(folder) / WEIGHTS))
    except ValueError as e:  # the same family with other width options
        raise DataError(f"{folder}: the encoder's layers do not fit this model (its options "
                        f"{info.get('model_options')}): {e}") from None
