"""Self-supervised pretraining on real breast ultrasound images: it learns, its weights are the ones a classifier
starts from, the small-data recipe uses it, and a model trained from it converts and runs on the cart."""

import json

import numpy as np
import pytest

from medlite.cli import main

pytestmark = pytest.mark.slow  # every test here trains with TensorFlow


@pytest.fixture(scope="module")
def busi_small(data_dir, tmp_path_factory):
    """A small class folder of real BUSI images (links): 24 benign, 24 malignant, 16 normal."""
    root = tmp_path_factory.mktemp("busi-small")
    for cls, n in (("benign", 24), ("malignant", 24), ("normal", 16)):
        (root / cls).mkdir()
        for f in sorted((data_dir / "busi" / "images" / cls).glob("*.png"))[:n]:
            (root / cls / f.name).symlink_to(f)
    return root


@pytest.mark.parametrize("method", ["simclr", "restore"])
def test_pretraining_learns_on_real_images(method, data_dir):
    """The loss falls well below where it starts on 64 real ultrasound images (SimCLR's: below chance, a view
    finding its pair among the batch's 63 others by luck): a broken view, mask, loss or optimiser step leaves
    it flat."""
    from medlite.edge.contract import InputSpec, Preprocess
    from medlite.train.data import unlabelled_images
    from medlite.train.pretrain import pretrain

    x, skipped = unlabelled_images([data_dir / "busi" / "images" / "malignant"], InputSpec(32, 32, 1), Preprocess())
    assert len(x) == 152 and not skipped and 0 <= x.min() and x.max() <= 1.0001
    _, losses, _ = pretrain(x[:64], "small_cnn", {"width": 8, "dense": 16}, method=method, epochs=20, batch_size=32)
    assert all(np.isfinite(losses))
    start = np.log(63) if method == "simclr" else losses[0]
    assert np.mean(losses[-3:]) < (0.85 if method == "simclr" else 0.5) * start, losses


def test_a_classifier_starts_from_the_pretrained_encoder(busi_small, tmp_path, capsys):
    """`medlite pretrain` writes the encoder; `--init` gives a classifier exactly its weights (and fresh ones
    above it); an encoder for another input size or family is refused in one line."""
    from medlite.train.models import build
    from medlite.train.pretrain import backbone, describe, load_into

    enc = tmp_path / "enc"
    assert main(["pretrain", "--data", str(busi_small), "--out", str(enc), "--image-size", "32", "--epochs", "2",
                 "-q"]) == 0
    info = describe(enc)
    assert info["images"] == 64 and info["method"] == "simclr" and info["input_shape"] == [32, 32, 1]
    options = info["model_options"]
    saved = build("small_cnn", input_shape=(32, 32, 1), num_classes=2, **options)
    load_into(saved, enc)
    fresh = build("small_cnn", input_shape=(32, 32, 1), num_classes=3, **options)
    loaded = build("small_cnn", input_shape=(32, 32, 1), num_classes=3, **options)
    load_into(loaded, enc)
    for a, b, c in zip(backbone(saved).get_weights(), backbone(loaded).get_weights(), backbone(fresh).get_weights()):
        assert np.array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(backbone(loaded).get_weights(),
                                                         backbone(fresh).get_weights()))
    with pytest.raises(Exception, match="pretrained for small_cnn at input"):
        load_into(build("small_cnn", input_shape=(64, 64, 1), num_classes=3, **options), enc)

    out = tmp_path / "b"
    assert main(["train", "--data", str(busi_small), "--init", str(enc), "--epochs", "1", "--out", str(out),
                 "-q"]) == 0
    bundle = json.loads((out / "bundle.json").read_text())
    assert bundle["pretraining"]["method"] == "simclr" and bundle["pretraining"]["folder"] == str(enc)
    assert json.loads((out / "contract.json").read_text())["provenance"]["pretraining"] == "simclr"
    capsys.readouterr()
    assert main(["train", "--data", str(busi_small), "--init", str(enc), "--image-size", "64", "--out",
                 str(out)]) == 2
    assert "the encoder was pretrained with image-size 32, not 64" in capsys.readouterr().err
    assert main(["train", "--data", str(busi_small), "--init", str(tmp_path), "--out", str(out)]) == 2
    assert "not a pretrained encoder" in capsys.readouterr().err


def test_the_small_data_recipe_pretrains_and_its_model_converts_and_runs(busi_small, data_dir, tmp_path, capsys):
    """Under 2000 images the recipe pretrains on the training images themselves and on --unlabelled folders;
    the model trained from that encoder converts to int8 and answers on the cart's runtime."""
    out = tmp_path / "b"
    normal = data_dir / "busi" / "images" / "normal"
    assert main(["train", "--data", str(busi_small), "--image-size", "32", "--epochs", "2", "--pretrain-epochs", "2",
                 "--unlabelled", str(normal), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "pretraining: simclr" in err or "pretraining: restore" in err
    info = json.loads((out / "encoder" / "encoder.json").read_text())
    train_images = info["training_images"]
    assert info["images"] == train_images + 82 and info["unlabelled_folders"] == [str(normal)]
    assert (out / "encoder" / "encoder.weights.h5").is_file()
    models = tmp_path / "m"
    assert main(["convert", str(out), "--variants", "int8", "--out", str(models), "--allow-drop", "-q"]) == 0
    from medlite.edge import load

    model = load(next(models.glob("*int8*.tflite")))
    p = model.predict(str(next((busi_small / "malignant").iterdir())))
    assert p.label in ("benign", "malignant", "normal") and abs(sum(p.scores.values()) - 1) < 0.02
    assert main(["train", "--data", str(busi_small), "--pretrain", "none", "--unlabelled", str(normal), "--out",
                 str(out)]) == 2
    assert "this recipe does not pretrain" in capsys.readouterr().err
    assert main(["train", "--data", str(busi_small), "--pretrain", "imagenet", "--model", "small_cnn", "--out",
                 str(out)]) == 2
    assert "ImageNet weights for efficientnet_lite0 and efficientnet_lite2, not small_cnn" in capsys.readouterr().err


def test_folds_fit_the_calibration_and_distil_their_ensemble(busi_small, tmp_path, capsys):
    """With --folds the multi-class calibration is fitted on every training image's held-out score, and
    --distil trains the model towards the folds' ensemble; --distil without folds is a usage error."""
    out = tmp_path / "b"
    assert main(["train", "--data", str(busi_small), "--image-size", "32", "--epochs", "2", "--pretrain", "none",
                 "--folds", "2", "--distil", "--out", str(out), "-q"]) == 0
    bundle = json.loads((out / "bundle.json").read_text())
    assert bundle["distilled_from"] == "the ensemble of 2 cross-validation folds' models"
    contract = json.loads((out / "contract.json").read_text())
    calibration = contract["calibration"]
    assert contract["operating_point"] == "class weights (balanced) on cross-validation scores"
    pooled = 64  # train and validation together
    assert calibration["fitted_on"] == f"cross-validation scores of {pooled} training images"
    assert len(calibration["weights"]) == 3
    assert len(json.loads((out / "metrics.json").read_text())["cross_validation"]["auc"]["per_fold"]) == 2
    assert main(["train", "--data", str(busi_small), "--distil", "--out", str(out)]) == 2
    assert "add --folds" in capsys.readouterr().err
