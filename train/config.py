"""The training recipe: one dataclass, every field commented, loaded from YAML and overridden by flags."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

# The family trained when none is named: the best default recipe in benchmarks/RESULTS.md.
DEFAULT_FAMILY = "small_cnn"
# A training split smaller than this takes its family's small-data recipe (the ``small_data`` entry of the
# family's recipe file), chosen by cross-validation on small training sets (benchmarks/RESULTS.md).
SMALL_DATA_IMAGES = 2000
# ...and one of images at least this large, with no family named, fine-tunes EfficientNet-Lite0 from ImageNet
# weights: on BUSI's kept-aside halves at 128 and 160 px it beat the small CNN's small-data recipe.
IMAGENET_FROM_PX = 128


@dataclass
class TrainConfig:
    model: str = field(default="small_cnn", metadata={"help": 'model family: small_cnn, mobilenet_v2, resnet, efficientnet_lite0, efficientnet_lite2'})
    model_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "the builder's width options"})
    image_size: int = field(default=28, metadata={"help": 'input side in pixels; class-folder images are resized to it (npz keeps its own)'})
    color: str = field(default="grey", metadata={"help": '"grey" or "rgb"; npz sets it from its channels'})
    epochs: int = field(default=40, metadata={"help": 'upper bound; early stopping usually ends sooner'})
    min_steps: int = field(default=0, metadata={"help": "the fewest optimiser steps: a training split of a few "
                                                         "dozen images is one step an epoch, so its epochs are "
                                                         "raised until the schedule has this many (0: off; "
                                                         "--epochs without --min-steps turns it off)"})
    batch_size: int = field(default=64, metadata={"help": "images per training step"})
    learning_rate: float = field(default=2e-3, metadata={"help": 'peak of the cosine schedule (Adam)'})
    weight_decay: float = field(default=1e-4, metadata={"help": 'L2 on conv and dense kernels'})
    freeze_batch_norm: bool = field(default=False, metadata={"help": "from pretrained weights: batch "
                                                                     "normalisation stays in inference mode "
                                                                     "while training, with the starting weights' "
                                                                     "statistics and scales, not those of a few "
                                                                     "augmented batches (from random weights it "
                                                                     "does not apply)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "cross-entropy label smoothing"})
    pretrain: str = field(default="none", metadata={"help": 'self-supervised pretraining of the encoder on the training images (and --unlabelled folders) before training: "simclr", "restore" or "none"; or "imagenet": efficientnet_lite0 or _lite2 starts from ImageNet weights'})
    pretrain_epochs: int = field(default=100, metadata={"help": "pretraining epochs (passes over the unlabelled images)"})
    mask_weight: float = field(default=1.0, metadata={"help": "with --masks: the weight of the loss that teaches "
                                                              "the last feature map where the finding is (0: masks "
                                                              "unused)"})
    class_weights: str = field(default="balanced", metadata={"help": '"balanced" (inverse class frequency) or "none"'})
    rotation_deg: float = field(default=10.0, metadata={"help": 'augmentation: random rotation, +/- degrees (anatomy stays upright)'})
    shift: float = field(default=0.08, metadata={"help": 'augmentation: random shift, fraction of the side'})
    zoom: float = field(default=0.1, metadata={"help": 'augmentation: random zoom, +/- fraction'})
    brightness: float = field(default=0.1, metadata={"help": 'augmentation: random brightness, +/- fraction of full scale'})
    contrast: float = field(default=0.15, metadata={"help": 'augmentation: random contrast, +/- fraction'})
    mixup: float = field(default=0.0, metadata={"help": "mixup's Beta(a, a) parameter: each training image blended with another of its batch, labels alike (0: off)"})
    horizontal_flip: bool = field(default=False, metadata={"help": 'off: left and right differ in anatomy (heart, situs); on for symmetric tasks'})
    patience: int = field(default=10, metadata={"help": 'early stopping: epochs without a validation AUC at least min_delta above the last such gain'})
    checkpoint: str = field(default="best", metadata={"help": '"best": the weights of the epoch with the best '
                                                              'validation AUC (early stopping on); "last": the '
                                                              "schedule's end (no early stopping), for a validation "
                                                              "split too small to pick an epoch"})
    min_delta: float = field(default=0.001, metadata={"help": 'early stopping: the validation AUC gain that counts as progress'})
    seed: int = field(default=0, metadata={"help": 'fixes weights, shuffling, augmentation and the validation split'})
    val_fraction: float = field(default=0.1, metadata={"help": 'stratified validation split when the data has none'})
    operating_point: str = field(default="sensitivity", metadata={"help": '"sensitivity" (reach target_sensitivity) or "youden"'})
    target_sensitivity: float = field(default=0.95, metadata={"help": 'for operating_point "sensitivity"'})
    calibration: str = field(default="balanced", metadata={"help": 'multi-class decisions, chosen on validation: "balanced" (class weights for the best balanced accuracy), "prior" (undo the class weighting) or "none" (the highest score)'})
    positive_class: str | None = field(default=None, metadata={"help": 'binary sets: the class a "positive" decision means (the disease); default: the known one for MedMNIST sets, else the second'})
    modality: str | None = field(default=None, metadata={"help": 'intended use: DICOM modalities the model is for, comma-separated (CR,DX); default: the training DICOMs\' own, or the MedMNIST set\'s'})
    age_range: str | None = field(default=None, metadata={"help": 'intended use: the patients\' ages, MIN-MAX in years ("1-5"), or in months with m ("0m-18m"); default: the training DICOMs\' own, or the MedMNIST set\'s'})
    if_age_missing: str = field(default="reject", metadata={"help": 'a DICOM that gives no patient age where an age range is set: "reject" (it cannot be checked) or "answer" (its record marked)'})
    body_part: str | None = field(default=None, metadata={"help": 'intended use: DICOM body parts, comma-separated (CHEST); default as for --modality'})
    view_position: str | None = field(default=None, metadata={"help": 'intended use: DICOM view positions, comma-separated (AP,PA: frontal films); default: the training DICOMs\' own'})

    @classmethod
    def fields(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))

    def updated(self, **changes) -> "TrainConfig":
        unknown = set(changes) - {f.name for f in self.fields()}
        if unknown:
            raise ValueError(f"unknown recipe field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, family: str | None = None, small_data: bool = False) -> TrainConfig:
    """A recipe from a YAML file, else the family's default recipe, else the defaults; with ``small_data``, the
    recipe's ``small_data`` entry applied over it."""
    if path is not None:
        text = Path(path).read_text()
        source = str(path)
    else:
        recipe = resources.files("medlite.train") / "recipes" / f"{family or DEFAULT_FAMILY}.yaml"
        if not recipe.is_file():
            return TrainConfig(model=family or DEFAULT_FAMILY)
        text, source = recipe.read_text(), str(recipe)
    import yaml

    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a recipe is a mapping of field: value")
    small = data.pop("small_data", None) or {}
    try:
        return TrainConfig().updated(**data).updated(**(small if small_data else {}))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: {e}") from None


def recipe_families() -> list[str]:
    return sorted(p.name[:-5] for p in (resources.files("medlite.train") / "recipes").iterdir()
                  if p.name.endswith(".yaml"))
