"""Fine-tuning that some variants need before conversion: quantization-aware training and magnitude pruning.

Both start from the bundle's trained weights and train briefly on the bundle's
own training data with its recipe's augmentation and class weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..train.bundle import Bundle
from ..train.data import TrainingData
from ..train.fit import make_dataset, class_weights
from ..train.tf import keras, tf


@dataclass(frozen=True)
class FineTune:
    # QAT only adapts trained weights to int8: a gentle pass keeps its decisions closest to fp32's.
    # Epochs and rates were chosen on validation agreement with fp32 (benchmarks/RESULTS.md): on the default
    # recipe's model one epoch agreed best, two less.
    qat_epochs: int = 1
    qat_learning_rate: float = 1e-5
    # Pruning zeroes half the weights; with distillation these settings gave the best validation agreement
    # with fp32 among those tried (benchmarks/RESULTS.md), one epoch better than two or three; it reaches the
    # sparsity at 70% of its steps.
    prune_epochs: int = 1
    prune_learning_rate: float = 1e-4
    sparsity: float = 0.5  # int8-pruned: fraction of conv and dense weights set to zero
    # Train towards the fp32 model's own scores (distillation) rather than the labels: the point of these
    # variants is to give the validated model's answers with fewer or smaller weights.
    distill: bool = True


def _tfmot():
    import tensorflow_model_optimization as tfmot

    return tfmot


def _fit(model, bundle: Bundle, data: TrainingData, epochs: int, learning_rate: float, callbacks=(),
         distill: bool = False):
    tr = data.splits["train"]
    n_classes = len(data.label_names)
    ds = make_dataset(tr.x, tr.y, n_classes, class_weights(tr.y, n_classes, bundle.config.class_weights), bundle.config)
    if distill:
        teacher = bundle.model
        ds = ds.map(lambda x, y, w: (x, teacher(x, training=False), w))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(), weighted_metrics=["accuracy"])
    model.fit(ds, epochs=epochs, verbose=0, callbacks=list(callbacks))
    return model


def _clone(bundle: Bundle):
    model = keras.models.clone_model(bundle.model)
    model.set_weights(bundle.model.get_weights())
    return model


def quantization_aware(bundle: Bundle, data: TrainingData, options: FineTune):
    """The bundle's model with fake-quantization inserted, fine-tuned so its weights expect int8."""
    tfmot = _tfmot()
    try:
        model = tfmot.quantization.keras.quantize_model(_clone(bundle))
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"quantization-aware training cannot wrap this model: {e}") from None
    return _fit(model, bundle, data, options.qat_epochs, options.qat_learning_rate, distill=options.distill)


def pruned(bundle: Bundle, data: TrainingData, options: FineTune):
    """The bundle's model pruned to ``options.sparsity`` by magnitude while fine-tuning, wrappers stripped."""
    tfmot = _tfmot()
    steps = int(np.ceil(len(data.splits["train"].x) / bundle.config.batch_size)) * options.prune_epochs
    # Reach the target sparsity at 70% of the steps in ten mask updates, then train on with it fixed.
    # (tfmot's default of one update per 100 steps never fires on a small set's short fine-tune.)
    frequency = max(1, int(steps * 0.7) // 10)
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, options.sparsity, begin_step=0, end_step=frequency * 10,
                                                    frequency=frequency)
    model = tfmot.sparsity.keras.prune_low_magnitude(_clone(bundle), pruning_schedule=schedule)
    model = _fit(model, bundle, data, options.prune_epochs, options.prune_learning_rate,
                 [tfmot.sparsity.keras.UpdatePruningStep()], distill=options.distill)
    return tfmot.sparsity.keras.strip_pruning(model)


FINE_TUNERS = {"quantization_aware": quantization_aware, "pruned": pruned}  # the variants table names these


def settings(kind: str, options: FineTune) -> dict:
    """The fine-tuning settings a variant's manifest entry records."""
    if kind == "quantization_aware":
        return {"finetune_epochs": options.qat_epochs, "finetune_learning_rate": options.qat_learning_rate}
    return {"finetune_epochs": options.prune_epochs, "finetune_learning_rate": options.prune_learning_rate,
            "target_sparsity": options.sparsity}


def fine_tune(bundle: Bundle, data: TrainingData, kind: str, options: FineTune | None = None):
    """The bundle's model fine-tuned by ``kind`` (a variant's ``fine_tune``)."""
    if kind not in FINE_TUNERS:
        raise ValueError(f"no fine-tuning named {kind!r} (known: {', '.join(FINE_TUNERS)})")
    options = options or FineTune()
    # Repeatable, like the training it continues: same seed, deterministic ops.
    keras.utils.set_random_seed(bundle.config.seed)
    tf.config.experimental.enable_op_determinism()
    return FINE_TUNERS[kind](bundle, data, options)


def sparsity_of(model) -> float:
    """Fraction of exactly-zero weights in conv and dense kernels."""
    kernels = [w for layer in model.layers for w in layer.get_weights()[:1]
               if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D", "Dense")]
    total = sum(k.size for k in kernels)
    return float(sum((k == 0).sum() for k in kernels) / total) if total else 0.0
