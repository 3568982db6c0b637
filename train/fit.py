"""Training: class-weighted, anatomy-respecting augmentation, best checkpoint and early stop on validation AUC."""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..edge.metrics import ovr_auc, roc_auc
from ..measure.datasets import POSITIVE_CLASS
from .config import TrainConfig
from .data import Arrays, TrainingData
from .models import build
from .pretrain import load_into
from .tf import keras, tf

TRAIN_AUC_IMAGES = 1000  # training images scored after each epoch for the log's train AUC
LOG_FIELDS = ("epoch", "loss", "accuracy", "train_auc", "val_loss", "val_accuracy", "val_auc", "lr", "seconds")


@dataclass
class TrainResult:
    model: "keras.Model"
    log: list[dict]  # one row per epoch, LOG_FIELDS
    best_epoch: int
    seconds: float


@dataclass
class EarlyStop:
    """Patience on validation AUC: only a gain of at least ``min_delta`` over the last such gain counts as
    progress, so an AUC that creeps up by thousandths ends the run instead of stretching it to the cap."""

    patience: int
    min_delta: float
    mark: float = -math.inf
    waited: int = 0

    def update(self, auc: float) -> bool:
        """Record one epoch's validation AUC; True when training should stop."""
        if auc >= self.mark + self.min_delta:
            self.mark, self.waited = auc, 0
        else:
            self.waited += 1
        return self.waited >= self.patience


def positive_class(data: TrainingData, config: TrainConfig) -> tuple[int | None, str]:
    """The positive class of a binary task, and how it was chosen: the recipe's ``positive_class``, else
    the clinically positive class of a known data set, else the second label (and the reason says so)."""
    if len(data.label_names) != 2:
        return None, "multi-class: the highest score decides"
    if config.positive_class is not None:
        if config.positive_class not in data.label_names:
            raise ValueError(f"positive_class {config.positive_class!r} is not one of {data.label_names}")
        return data.label_names.index(config.positive_class), "as asked (positive_class)"
    known = POSITIVE_CLASS.get(data.name)
    if known in data.label_names:
        return data.label_names.index(known), f"the clinically positive class of {data.name}"
    return 1, (f"the second label, since {data.name!r} is not a data set medlite knows; "
               "name the disease class with --positive-class")


def positive_index(data: TrainingData, config: TrainConfig) -> int | None:
    return positive_class(data, config)[0]


def auc_of(y: np.ndarray, probs: np.ndarray, pos: int | None) -> float:
    return roc_auc(y == pos, probs[:, pos]) if pos is not None else ovr_auc(y, probs)


def _augmenters(config: TrainConfig, seed: int):
    """The geometric augmentation (applied to an image and its mask alike) and the contrast (the image only)."""
    L = keras.layers
    layers = []
    if config.horizontal_flip:
        layers.append(L.RandomFlip("horizontal", seed=seed))
    if config.rotation_deg:
        layers.append(L.RandomRotation(config.rotation_deg / 360.0, fill_mode="nearest", seed=seed + 1))
    if config.shift:
        layers.append(L.RandomTranslation(config.shift, config.shift, fill_mode="nearest", seed=seed + 2))
    if config.zoom:
        layers.append(L.RandomZoom(config.zoom, fill_mode="nearest", seed=seed + 3))
    geometric = keras.Sequential(layers, name="augment") if layers else None
    contrast = L.RandomContrast(config.contrast, seed=seed + 4) if config.contrast else None
    return geometric, contrast


def make_dataset(x, y, n_classes, weights, config: TrainConfig, teacher: np.ndarray | None = None,
                 masks: np.ndarray | None = None, mask_size: tuple[int, int] | None = None):
    """Augmented, shuffled batches of (image, target, class weight); the target is the one-hot label, or with
    ``teacher`` (scores of the same images) the mean of the label and the teacher's scores. With ``masks``
    (NaN where unknown), the batches are (image, (target, mask), (class weight, 1 where the mask is known)),
    each mask moved with its image and scaled to ``mask_size``, the last feature map's."""
    onehot = np.eye(n_classes, dtype=np.float32)[y]
    if teacher is not None:
        onehot = (onehot + teacher.astype(np.float32)) / 2
    sw = weights[y].astype(np.float32)
    if masks is None:
        ds = tf.data.Dataset.from_tensor_slices((x, onehot, sw))
    else:
        known = Arrays(x, y, masks).with_mask
        ds = tf.data.Dataset.from_tensor_slices(
            (np.concatenate([x, np.nan_to_num(masks)[..., None]], axis=-1), (onehot, known.astype(np.float32)), sw))
    ds = ds.shuffle(len(x), seed=config.seed, reshuffle_each_iteration=True).batch(config.batch_size)
    geometric, contrast = _augmenters(config, config.seed)
    brightness = config.brightness

    def aug(xb, yb, wb):
        if geometric is not None:
            xb = geometric(xb, training=True)
        if masks is not None:  # the mask rode along as a last channel
            xb, mb = xb[..., :-1], tf.image.resize(xb[..., -1:], mask_size, method="area")
            (yb, kb) = yb
            yb, wb = (yb, mb), (wb, kb[:, None, None])  # the mask's loss is per pixel
        if contrast is not None:
            xb = contrast(xb, training=True)
        if brightness:
            xb = xb + tf.random.uniform((tf.shape(xb)[0], 1, 1, 1), -brightness, brightness)
        if config.mixup:
            xb, yb, wb = _mixup(xb, yb, wb, config.mixup)
        return xb, yb, wb

    # Fixed parallelism and autotuning off: with tf.data's autotuning on, one `fit` epoch in three returned
    # only after about 20 s whatever its steps took (10 s of them idle, measured on a 2-core EPYC, TF 2.21).
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.map(aug, num_parallel_calls=2).prefetch(2).with_options(options)


def _mixup(xb, yb, wb, alpha: float):
    """Mixup (Zhang et al. 2018): each image blended with another of the batch by a weight drawn from Beta(a, a),
    its target, class weight and finding mask alike; a mask counts only where both images' masks are known."""
    n = tf.shape(xb)[0]
    g1, g2 = tf.random.gamma((n,), alpha), tf.random.gamma((n,), alpha)
    lam = g1 / (g1 + g2)
    other = tf.random.shuffle(tf.range(n))

    def blend(a, shape):
        w = tf.reshape(lam, shape)
        return w * a + (1 - w) * tf.gather(a, other)

    xb = blend(xb, (-1, 1, 1, 1))
    if isinstance(yb, tuple):  # (target, mask), (class weight, mask known)
        (y, m), (w, k) = yb, wb
        return xb, (blend(y, (-1, 1)), blend(m, (-1, 1, 1, 1))), (blend(w, (-1,)), k * tf.gather(k, other))
    return xb, blend(yb, (-1, 1)), blend(wb, (-1,))


def class_weights(y: np.ndarray, n_classes: int, policy: str) -> np.ndarray:
    if policy == "none":
        return np.ones(n_classes)
    if policy != "balanced":
        raise ValueError(f"class_weights must be 'balanced' or 'none', got {policy!r}")
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return len(y) / (n_classes * np.maximum(counts, 1))


def steps_per_epoch(n_images: int, config: TrainConfig) -> int:
    return math.ceil(n_images / config.batch_size)


def epochs_for(n_images: int, config: TrainConfig) -> int:
    """The recipe's epochs, raised where needed so that the schedule takes at least ``min_steps`` optimiser
    steps over ``n_images`` training images."""
    return max(config.epochs, math.ceil(config.min_steps / steps_per_epoch(n_images, config)))


def train(data: TrainingData, config: TrainConfig, *, log_path: str | Path | None = None,
          progress=None, init: str | Path | None = None, teacher: np.ndarray | None = None) -> TrainResult:
    """Train ``config.model`` on ``data``; the returned model holds the best validation-AUC weights.

    ``progress`` is an optional callable(epoch, epochs, row) for a display; ``init`` a pretrained encoder
    folder (``medlite pretrain``) whose weights the model starts from; ``teacher`` the training images' scores
    from a teacher (the cross-validation folds' ensemble) that the model is distilled towards.
    """
    keras.utils.set_random_seed(config.seed)
    # Same seed, same weights: without this, thread scheduling changes reductions from run to run.
    tf.config.experimental.enable_op_determinism()
    n_classes = len(data.label_names)
    pos = positive_index(data, config)
    tr, va = data.splits["train"], data.splits["val"]
    model = build(config.model, input_shape=tr.x.shape[1:], num_classes=n_classes, **config.model_options)
    if init is not None:
        load_into(model, init)
    if config.freeze_batch_norm and init is not None:  # random weights have no statistics to keep
        freeze_batch_norm(model)
    steps, epochs = steps_per_epoch(len(tr.x), config), epochs_for(len(tr.x), config)
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=steps * epochs,
                                                      alpha=0.01)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
    weights = class_weights(tr.y, n_classes, config.class_weights)
    guided = config.mask_weight > 0 and tr.with_mask.any()
    if guided:
        trainer, mask_size = with_finding_head(model)
        trainer.compile(optimizer=optimizer, loss=[loss, keras.losses.BinaryCrossentropy(from_logits=True)],
                        loss_weights=[1.0, config.mask_weight], weighted_metrics=[["accuracy"], []])
        ds = make_dataset(tr.x, tr.y, n_classes, weights, config, teacher, tr.masks, mask_size)
    else:
        trainer = model
        trainer.compile(optimizer=optimizer, loss=loss, weighted_metrics=["accuracy"])
        ds = make_dataset(tr.x, tr.y, n_classes, weights, config, teacher)
    yv = np.eye(n_classes, dtype=np.float32)[va.y]
    # Train AUC is measured on a fixed unaugmented subset, so the log stays cheap on big sets.
    sub = np.random.default_rng(config.seed).permutation(len(tr.x))[:TRAIN_AUC_IMAGES]
    best, early = (-1.0, 0, None), EarlyStop(config.patience, config.min_delta)
    log, t_start = [], time.perf_counter()
    log_file = open(log_path, "w", newline="") if log_path else None
    writer = csv.DictWriter(log_file, LOG_FIELDS) if log_file else None
    if writer:
        writer.writeheader()
    try:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            h = trainer.fit(ds, epochs=1, verbose=0).history
            pv = model.predict(va.x, batch_size=512, verbose=0)
            pt = model.predict(tr.x[sub], batch_size=512, verbose=0)
            # Validation loss and accuracy from the same predictions: a second pass over validation gave nothing new.
            val_loss = float(np.mean(loss(yv, pv)))
            val_acc = float(np.mean(pv.argmax(1) == va.y))
            row = {
                "epoch": epoch, "loss": h["loss"][0],
                "accuracy": next(v[0] for k, v in h.items() if k.endswith("accuracy")),
                "train_auc": auc_of(tr.y[sub], pt, pos), "val_loss": val_loss, "val_accuracy": val_acc,
                "val_auc": auc_of(va.y, pv, pos),
                "lr": float(schedule(optimizer.iterations)), "seconds": time.perf_counter() - t0,
            }
            log.append(row)
            if writer:
                writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
                log_file.flush()
            stop = early.update(row["val_auc"]) and config.checkpoint == "best"
            if config.checkpoint == "best" and row["val_auc"] > best[0]:  # kept whatever the gain
                best = (row["val_auc"], epoch, model.get_weights())
            if progress:
                progress(epoch, epochs, row)
            if stop:
                break
    finally:
        if log_file:
            log_file.close()
    if config.checkpoint == "best":
        model.set_weights(best[2])
    else:
        best = (log[-1]["val_auc"], len(log), None)
    return TrainResult(model, log, best[1], time.perf_counter() - t_start)


def freeze_batch_norm(model: "keras.Model") -> None:
    """Keeps ``model``'s batch normalisation in inference mode while it trains (a Keras layer that is not
    trainable normalises with its moving statistics). Fine-tuned on a few hundred images, the layers otherwise
    learn their statistics and scales from batches of 32 augmented images; frozen, they keep those of the
    weights the model starts from."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def with_finding_head(model: "keras.Model") -> tuple["keras.Model", tuple[int, int]]:
    """A training model with a second output: a 1x1 convolution of the last feature map (the one the heatmap
    is made of) that predicts where the finding is, as logits. Its loss teaches the features to hold the
    finding, not what surrounds it; the deployed model is ``model`` alone, unchanged. Also the feature map's
    size."""
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)]
    if not pools:
        raise ValueError(f"{model.name}: masks need a model whose head is global average pooling")
    fmap = pools[-1].input
    finding = keras.layers.Conv2D(1, 1, name="finding_mask")(fmap)
    return keras.Model(model.input, [model.output, finding], name=f"{model.name}_with_masks"), tuple(fmap.shape[1:3])
