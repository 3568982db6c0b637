"""Training: the model zoo, the split, the recipe, the bundle, and data sets other than the default one."""

import csv
import json

import cv2
import numpy as np
import pytest

from medlite.cli import main
from medlite.measure import datasets
from medlite.train.config import TrainConfig, load_config, recipe_families
from medlite.train.data import stratified_split
from medlite.train.models import FAMILIES, build

pytestmark = pytest.mark.slow  # every test here trains or converts with TensorFlow

# Layers that full-integer TFLite and the Edge TPU run natively (BatchNorm folds into the conv at conversion;
# Rescaling, EfficientNet-Lite0's input scaling, becomes a MUL and an ADD).
EDGE_FRIENDLY = {"InputLayer", "Conv2D", "DepthwiseConv2D", "BatchNormalization", "ReLU", "MaxPooling2D",
                 "AveragePooling2D", "GlobalAveragePooling2D", "Dense", "Softmax", "Dropout", "Add", "Flatten",
                 "Rescaling"}


@pytest.fixture(scope="module")
def real_batch(data_dir):
    split = datasets.load("pneumoniamnist", data_dir).splits["train"]
    return split.images[:32, :, :, None].astype(np.float32) / 255.0, split.labels[:32]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_builder_builds_trains_one_step_and_outputs_probabilities(family, real_batch):
    x, y = real_batch
    model = build(family, input_shape=(28, 28, 1), num_classes=2)
    assert {type(layer).__name__ for layer in model.layers} <= EDGE_FRIENDLY
    model.compile("adam", "sparse_categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    p = model.predict(x, verbose=0)
    assert p.shape == (32, 2) and np.allclose(p.sum(1), 1, atol=1e-5)
    wide = build(family, input_shape=(64, 64, 3), num_classes=5)
    assert wide.output_shape == (None, 5)


def test_early_stopping_ends_a_validation_auc_that_only_creeps_up():
    """The demo's validation AUCs on a 2-core AVX2 machine: with strict improvement and patience 10 the run
    went to the cap of 40 epochs; gains under min_delta do not count, so it ends at 20."""
    from medlite.train.fit import EarlyStop

    aucs = [0.9841, 0.987242, 0.987375, 0.973988, 0.994097, 0.993811, 0.994973, 0.992954, 0.994916, 0.995677,
            0.991583, 0.994516, 0.995677, 0.994383, 0.99503, 0.99503, 0.994116, 0.995773, 0.995163, 0.994535,
            0.994097, 0.994364, 0.995563, 0.996801]
    early = EarlyStop(patience=10, min_delta=0.001)
    stopped_at = next(epoch for epoch, auc in enumerate(aucs, 1) if early.update(auc))
    assert stopped_at == 20 and early.mark == 0.995677
    strict = EarlyStop(patience=10, min_delta=0.0)
    assert not any(strict.update(a) for a in aucs)


def test_checkpoint_last_runs_the_whole_schedule_and_keeps_its_end(data_dir):
    """With checkpoint "last" no early stop ends the run (patience 1 would) and the model is the schedule's end,
    whatever the validation AUC did; "best" stops and rolls back to its best epoch."""
    from medlite.train.data import load_training_data
    from medlite.train.fit import train

    import dataclasses

    data = load_training_data("pneumoniamnist", data_dir=data_dir)
    data = dataclasses.replace(data, splits={s: a.take(slice(0, 300)) for s, a in data.splits.items()})
    config = TrainConfig(epochs=6, patience=1, min_delta=0.5, batch_size=64)
    last = train(data, config.updated(checkpoint="last"))
    assert len(last.log) == 6 and last.best_epoch == 6
    ours = last.model.predict(data.splits["val"].x, verbose=0)
    assert np.isclose(float(np.mean(ours.argmax(1) == data.splits["val"].y)), last.log[-1]["val_accuracy"])
    best = train(data, config)
    assert len(best.log) == 2 and best.best_epoch in (1, 2)  # min_delta 0.5: no epoch's gain counts


def test_mixup_blends_each_image_with_another_and_its_target_and_weight_alike(real_batch):
    """With mixup on (and no other augmentation), every training image is one real image blended with another of
    its batch, and its target and class weight are the same blend of theirs; some are truly mixed."""
    from medlite.train.fit import make_dataset

    x, y = real_batch
    x, y = x[:16], y[:16]
    weights, onehot = np.array([1.0, 3.0]), np.eye(2)[y]
    config = TrainConfig(rotation_deg=0, shift=0, zoom=0, contrast=0, brightness=0, batch_size=16, mixup=0.4)
    xb, yb, wb = (t.numpy() for t in next(iter(make_dataset(x, y, 2, weights, config))))
    flat, mixed = x.reshape(16, -1), 0
    for k in range(16):
        # The pair and the weight that rebuild image k best (least squares over every ordered pair).
        fits = []
        for i in range(16):
            for j in range(16):
                d = flat[i] - flat[j]
                lam = 1.0 if i == j else float(np.clip(d @ (xb[k].ravel() - flat[j]) / (d @ d), 0, 1))
                fits.append((np.abs(lam * flat[i] + (1 - lam) * flat[j] - xb[k].ravel()).max(), lam, i, j))
        err, lam, i, j = min(fits)
        assert err < 1e-4
        if y[i] != y[j]:  # the label's blend says the weight too
            assert np.allclose(yb[k], lam * onehot[i] + (1 - lam) * onehot[j], atol=1e-3)
            assert np.isclose(wb[k], lam * weights[y[i]] + (1 - lam) * weights[y[j]], atol=1e-3)
            mixed += 0.05 < lam < 0.95
        assert np.isclose(yb[k].sum(), 1, atol=1e-5)
    assert mixed >= 2
    plain = next(iter(make_dataset(x, y, 2, weights, config.updated(mixup=0.0))))[1].numpy()
    assert set(np.unique(plain)) <= {0.0, 1.0}  # off, the targets stay one-hot


def test_builders_are_keyword_only_and_check_options():
    with pytest.raises(TypeError):
        FAMILIES["small_cnn"]((28, 28, 1), 2)
    with pytest.raises(ValueError, match="alpha must be between 0.35 and 1.0"):
        build("mobilenet_v2", input_shape=(28, 28, 1), num_classes=2, alpha=1.4)
    with pytest.raises(ValueError, match="did you mean 'resnet'"):
        build("resnt", input_shape=(28, 28, 1), num_classes=2)
    small = build("mobilenet_v2", input_shape=(28, 28, 1), num_classes=2, alpha=0.35).count_params()
    big = build("mobilenet_v2", input_shape=(28, 28, 1), num_classes=2, alpha=1.0).count_params()
    assert big > 3 * small
    with pytest.raises(ValueError, match="stages must be 1 or more"):
        build("small_cnn", input_shape=(28, 28, 1), num_classes=2, stages=0)


@pytest.mark.parametrize("stages, side", [(3, 16), (4, 8)])
def test_the_small_cnn_halves_its_map_and_doubles_its_width_each_stage(stages, side):
    """At 128 px the stem halves the image, then each stage but the last halves it again: the map the heatmap
    is drawn from is 16x16 with three stages and 8x8 with four, 32 channels doubled at each stage."""
    model = build("small_cnn", input_shape=(128, 128, 1), num_classes=3, stages=stages)
    assert model.get_layer("gap").input.shape[1:] == (side, side, 32 * 2 ** (stages - 1))


def test_stratified_split_keeps_class_shares_and_is_repeatable():
    y = np.array([0] * 100 + [1] * 300 + [2] * 7)
    keep, held = stratified_split(y, 0.1, seed=3)
    assert len(np.intersect1d(keep, held)) == 0 and len(keep) + len(held) == len(y)
    assert np.bincount(y[held]).tolist() == [10, 30, 1]
    assert np.array_equal(held, stratified_split(y, 0.1, seed=3)[1])
    assert not np.array_equal(held, stratified_split(y, 0.1, seed=4)[1])


def test_recipes_load_and_flags_override(tmp_path):
    assert set(recipe_families()) == set(FAMILIES)
    for family in recipe_families():
        c = load_config(family=family)
        assert c.model == family and c.horizontal_flip is False and c.target_sensitivity == 0.95
    f = tmp_path / "r.yaml"
    f.write_text("model: resnet\nepochs: 3\nhorizontal_flip: true\n")
    c = load_config(f).updated(epochs=5, seed=None)
    assert (c.model, c.epochs, c.horizontal_flip, c.seed) == ("resnet", 5, True, 0)
    f.write_text("epochz: 3\n")
    with pytest.raises(ValueError, match="unknown recipe field"):
        load_config(f)
    for field in TrainConfig.fields():
        assert field.metadata.get("help"), f"recipe field {field.name} has no help"


def test_bundle_saved_and_reloaded_is_the_same_bundle(bundle, data_dir, tmp_path):
    """load -> save elsewhere -> load: the same contract, recipe, record and the same scores on real images."""
    from medlite.train.bundle import load_bundle, save_bundle

    b = load_bundle(bundle)
    assert b.info["data_sha256"] == datasets.file_hash(data_dir / "pneumoniamnist.npz")
    assert (bundle / "train_log.csv").read_text().splitlines()[0].startswith("epoch,loss,accuracy,train_auc")
    info = {k: v for k, v in b.info.items() if k != "medlite_version"}
    again = load_bundle(save_bundle(tmp_path / "copy", b.model, b.contract, b.metrics, b.config, info,
                                    log_csv=bundle / "train_log.csv"))
    assert again.contract == b.contract and again.contract.positive_index == 1 and again.contract.threshold
    assert again.config == b.config and again.metrics == b.metrics and again.info == b.info
    x = datasets.load("pneumoniamnist", data_dir).splits["test"].images[:32].astype(np.float32)[..., None] / 255
    np.testing.assert_array_equal(again.model.predict(x, verbose=0), b.model.predict(x, verbose=0))


def test_a_floor_on_steps_raises_the_epochs_of_a_small_split_and_the_schedule_spans_them(data_dir):
    """300 real chest X-rays at batch 64 are 5 steps an epoch: a floor of 20 steps makes 2 epochs into 4, and
    the cosine schedule ends at 1% of its peak on the fourth; a split already past the floor keeps its epochs."""
    import dataclasses

    from medlite.train.data import load_training_data
    from medlite.train.fit import epochs_for, train

    data = load_training_data("pneumoniamnist", data_dir=data_dir)
    data = dataclasses.replace(data, splits={s: a.take(slice(0, 300)) for s, a in data.splits.items()})
    config = TrainConfig(epochs=2, min_steps=20, batch_size=64, checkpoint="last")
    assert epochs_for(300, config) == 4 and epochs_for(3000, config) == 2 and epochs_for(24, config) == 20
    result = train(data, config)
    assert len(result.log) == 4 and result.best_epoch == 4
    assert result.log[-1]["lr"] == pytest.approx(0.01 * config.learning_rate, rel=1e-3)
    for family in ("efficientnet_lite0", "efficientnet_lite2"):  # the curve's smallest shares get their steps
        assert load_config(family=family).min_steps == 240


def test_the_schedule_anneals_within_the_epochs_the_run_may_take(bundle):
    """The cosine schedule spans the recipe's epochs (the demo's --epochs 5 included): a run that reaches its
    cap ends at 1% of the peak rate, instead of stopping early while the rate is still high."""
    import csv

    from medlite.train.bundle import load_bundle

    config = load_bundle(bundle).config
    rows = list(csv.DictReader((bundle / "train_log.csv").open()))
    assert len(rows) == config.epochs
    assert float(rows[-1]["lr"]) == pytest.approx(0.01 * config.learning_rate, rel=1e-3)
    assert load_config(family="small_cnn").epochs <= 12  # the default recipe anneals in 12 (RESULTS.md)


def test_not_a_bundle(tmp_path):
    from medlite.train.bundle import BundleError, load_bundle

    (tmp_path / "model.keras").write_text("x")
    with pytest.raises(BundleError, match="not a medlite bundle .missing bundle.json"):
        load_bundle(tmp_path)


def _class_folder(root, data_dir, dicom_dir):
    """A class-folder set from real images: PneumoniaMNIST test images as PNG, a real DICOM, a broken file."""
    split = datasets.load("pneumoniamnist", data_dir).splits["test"]
    for name, k in (("normal", 0), ("pneumonia", 1)):
        (root / name).mkdir(parents=True)
        for i in np.flatnonzero(split.labels == k)[:40]:
            cv2.imwrite(str(root / name / f"{i}.png"), split.images[i])
    (root / "normal" / "nih_nofinding.dcm").write_bytes((dicom_dir / "nih_cxr14_dx_nofinding.dcm").read_bytes())
    (root / "pneumonia" / "broken.png").write_bytes(b"\x89PNG broken")


def test_train_on_a_class_folder_of_real_images(tmp_path, data_dir, dicom_dir, capsys):
    _class_folder(tmp_path / "xray", data_dir, dicom_dir)
    out = tmp_path / "bundle"
    rc = main(["train", "--data", str(tmp_path / "xray"), "--out", str(out), "--epochs", "2", "--image-size", "28",
               "--pretrain", "none"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "positive class: pneumonia (the second label" in err and "--positive-class" in err
    info = json.loads((out / "bundle.json").read_text())
    assert info["skipped_files"] and "broken.png" in info["skipped_files"][0]
    contract = json.loads((out / "contract.json").read_text())
    assert contract["labels"] == ["normal", "pneumonia"] and contract["positive_index"] == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert "test" not in metrics and 0 <= metrics["validation"]["auc"] <= 1
    assert metrics["validation"]["n"] == 8  # 10% of each class, rounded: 41 normal (40 PNG + DICOM), 40 pneumonia


def test_train_on_rgb_multiclass_npz_without_val(tmp_path, data_dir, capsys):
    """Plumbing for any MedMNIST-format file: RGB, three classes, no val split (real pixels, labels by index)."""
    split = datasets.load("pneumoniamnist", data_dir).splits["train"]
    x = np.repeat(split.images[:300, :, :, None], 3, axis=3)
    y = (np.arange(300) % 3)[:, None]
    f = tmp_path / "rgb3.npz"
    np.savez(f, train_images=x, train_labels=y, test_images=x[:60], test_labels=y[:60])
    out = tmp_path / "b"
    assert main(["train", "--data", str(f), "--out", str(out), "--epochs", "1", "--model", "resnet"]) == 0
    contract = json.loads((out / "contract.json").read_text())
    assert contract["input"]["channels"] == 3 and contract["preprocess"]["color"] == "rgb"
    assert contract["threshold"] is None and contract["positive_index"] is None
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"auc", "accuracy"} <= set(metrics["validation"]) and metrics["validation"]["n"] == 30


def _breastmnist_from_busi(path, busi) -> None:
    """A BreastMNIST-format file from the real BUSI images: 28x28 grey, label 0 malignant, 1 normal or benign,
    as MedMNIST defines BreastMNIST."""
    xs, ys = [], []
    for cls, label in (("malignant", 0), ("benign", 1), ("normal", 1)):
        for f in sorted((busi / "images" / cls).glob("*.png"))[:60]:
            img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            xs.append(cv2.resize(img, (28, 28), interpolation=cv2.INTER_AREA))
            ys.append(label)
    x, y = np.stack(xs), np.array(ys)[:, None]
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    np.savez(path, train_images=x[:130], train_labels=y[:130], test_images=x[130:], test_labels=y[130:])


def test_breastmnist_positive_class_is_malignant(tmp_path, data_dir, capsys):
    """The clinically positive class, though it is label 0: the operating point protects malignant lesions."""
    _breastmnist_from_busi(tmp_path / "breastmnist.npz", data_dir / "busi")
    out = tmp_path / "b"
    assert main(["train", "--data", str(tmp_path / "breastmnist.npz"), "--out", str(out), "--epochs", "1",
                 "--pretrain", "none"]) == 0
    assert "positive class: malignant (the clinically positive class of breastmnist)" in capsys.readouterr().err
    contract = json.loads((out / "contract.json").read_text())
    assert contract["labels"] == ["malignant", "normal, benign"] and contract["positive_index"] == 0
    assert contract["provenance"]["positive_class"] == "malignant"
    assert json.loads((out / "metrics.json").read_text())["positive_class"]["label"] == "malignant"
    out2 = tmp_path / "b2"
    assert main(["train", "--data", str(tmp_path / "breastmnist.npz"), "--out", str(out2), "--epochs", "1",
                 "--pretrain", "none", "--positive-class", "normal, benign"]) == 0
    assert json.loads((out2 / "contract.json").read_text())["positive_index"] == 1


def test_folds_are_stratified_disjoint_and_cover_every_image(data_dir):
    from medlite.train.crossval import folds

    y = datasets.load("pneumoniamnist", data_dir).splits["train"].labels.ravel()[:500]
    parts = folds(y, 5, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(y)))  # disjoint and complete
    share = y.mean()
    assert all(abs(y[p].mean() - share) < 0.02 for p in parts)  # each fold keeps the class shares
    assert [p.tolist() for p in parts] == [p.tolist() for p in folds(y, 5, seed=0)]
    with pytest.raises(ValueError, match="folds need"):
        folds(y, 1)


@pytest.mark.parametrize("inner_val", [False, True])
def test_cross_validation_picks_the_epoch_on_the_held_out_fold_or_on_a_split_of_its_own(data_dir, monkeypatch,
                                                                                        inner_val):
    """Each fold's model watches the held-out fold (the default, flattering), or with ``inner_val`` a tenth of
    its own training images, which then never overlap the fold it is scored on; every image is scored once."""
    import dataclasses

    from medlite.train import crossval
    from medlite.train.data import load_training_data

    data = load_training_data("pneumoniamnist", data_dir=data_dir)
    data = dataclasses.replace(data, splits={"train": data.splits["train"].take(slice(0, 120))})
    seen, real = [], crossval.train
    monkeypatch.setattr(crossval, "train", lambda fold, config, **kw: seen.append(fold) or real(fold, config, **kw))
    cv = crossval.cross_validate(data, TrainConfig(epochs=1, batch_size=32), 2, inner_val=inner_val)
    x = data.splits["train"].x
    rows = {x[i].tobytes(): i for i in range(len(x))}
    for held, fold in zip(crossval.folds(cv["y"], 2), seen):
        val, tr = ({rows[im.tobytes()] for im in fold.splits[s].x} for s in ("val", "train"))
        assert not val & tr and not tr & set(held.tolist())
        if inner_val:
            assert not val & set(held.tolist()) and len(val) == 6 and len(tr) == 54
        else:
            assert val == set(held.tolist())
    assert np.all(cv["probs"].sum(1) > 0.99) and len(cv["auc"]["per_fold"]) == 2


def test_train_cross_validates_the_recipe_when_asked(tmp_path, data_dir, capsys):
    """--folds 3 on 300 real chest X-rays: three held-out AUCs, their mean inside its 95% interval, in
    metrics.json and on the console; the bundle is trained as usual."""
    split = datasets.load("pneumoniamnist", data_dir).splits["train"]
    f = tmp_path / "small.npz"
    np.savez(f, train_images=split.images[:300], train_labels=split.labels[:300], test_images=split.images[300:400],
             test_labels=split.labels[300:400])
    out = tmp_path / "b"
    assert main(["train", "--data", str(f), "--out", str(out), "--epochs", "2", "--pretrain-epochs", "3",
                 "--folds", "3"]) == 0
    cv = json.loads((out / "metrics.json").read_text())["cross_validation"]
    a = cv["auc"]
    assert cv["folds"] == 3 and len(a["per_fold"]) == 3 and len(cv["best_epochs"]) == 3
    assert a["ci95"][0] <= a["mean"] <= a["ci95"][1] and a["mean"] == pytest.approx(np.mean(a["per_fold"]))
    assert all(0.5 < v <= 1 for v in a["per_fold"])  # real learning, even in two epochs
    assert "cross-validation, 3 folds of the training images: AUC" in capsys.readouterr().err


def test_a_small_training_split_takes_the_small_data_recipe_and_says_so(tmp_path, data_dir, capsys):
    """300 real chest X-rays: the small CNN's small-data fields (60 epochs to the schedule's end, SimCLR
    pretraining on the training images) over its default recipe, named on the console and in bundle.json; a
    flag still wins (--epochs 1 and --pretrain-epochs 3 here, to keep the test short)."""
    from medlite.commands.train import choose_recipe

    default = load_config(family="small_cnn")
    small, name = choose_recipe(default, 300, None, "small_cnn", {})
    assert small.epochs == 60 and small.checkpoint == "last" and "small-data" in name and "300 images" in name
    assert default.checkpoint == "best"
    assert small.pretrain == "simclr" and default.pretrain == "none"
    assert choose_recipe(default, 4000, None, "small_cnn", {})[0] == default
    assert choose_recipe(default, 300, None, "small_cnn", {"epochs": 3})[0].epochs == 3
    # With no family named, a small split of images of 128 px and more fine-tunes ImageNet weights instead.
    big, name = choose_recipe(default, 300, None, "small_cnn", {"epochs": 3}, side=128)
    assert big.model == "efficientnet_lite0" and big.pretrain == "imagenet" and big.epochs == 3
    assert "from ImageNet weights" in name and "of 128 px" in name
    assert choose_recipe(default, 300, None, "small_cnn", {}, side=96)[0] == small
    assert choose_recipe(default, 4000, None, "small_cnn", {}, side=128)[0] == default
    split = datasets.load("pneumoniamnist", data_dir).splits["train"]
    f = tmp_path / "small.npz"
    np.savez(f, train_images=split.images[:300], train_labels=split.labels[:300], test_images=split.images[300:400],
             test_labels=split.labels[300:400])
    assert main(["train", "--data", str(f), "--out", str(tmp_path / "b"), "--epochs", "1", "--pretrain-epochs",
                 "3", "--min-steps", "6"]) == 0
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "recipe: small_cnn default, small-data (the training split has 270 images, under 2000); " \
           "pretraining: simclr" in err
    # 270 images at batch 64 are 5 steps an epoch: a floor of 6 steps takes a second epoch, and says so.
    assert "schedule: 2 epochs instead of 1, for the recipe's 6 optimiser steps at least (270 training images " \
           "at batch 64)" in err
    info = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert info["epochs_run"] == 2
    assert "small-data" in info["recipe"]
    assert info["pretraining"]["method"] == "simclr" and info["pretraining"]["images"] == 270
    assert (tmp_path / "b" / "encoder" / "encoder.weights.h5").is_file()


def test_the_label_efficiency_curve_trains_each_share_on_a_nested_sample(tmp_path, data_dir, capsys):
    """Two shares of 400 real chest X-rays: nested stratified samples, each trained and scored on the test split
    with its interval; the table, the CSV and the figure are written beside the bundle."""
    from medlite.train import label_efficiency
    from medlite.train.label_efficiency import nested_samples

    y = datasets.load("pneumoniamnist", data_dir).splits["train"].labels.ravel()[:400]
    samples = nested_samples(y, [0.1, 0.5, 1.0], seed=0)
    assert set(samples[0.1]) <= set(samples[0.5]) <= set(samples[1.0]) and len(samples[1.0]) == 400
    assert abs(y[samples[0.1]].mean() - y.mean()) < 0.05  # stratified
    split = datasets.load("pneumoniamnist", data_dir).splits
    f = tmp_path / "small.npz"
    np.savez(f, train_images=split["train"].images[:400], train_labels=split["train"].labels[:400],
             test_images=split["test"].images[:200], test_labels=split["test"].labels[:200])
    out = tmp_path / "b"
    assert main(["train", "--data", str(f), "--out", str(out), "--epochs", "2", "--min-steps", "12", "--pretrain",
                 "simclr", "--pretrain-epochs", "3", "--label-fractions", "0.25,1"]) == 0
    rows = list(csv.DictReader(open(out / "label_efficiency.csv")))
    # The floor of 12 steps at batch 64: the 90-image share runs 6 epochs of 2 steps, the 360 images 2 of 6.
    assert [(r["epochs"], r["steps"]) for r in rows] == [("6", "12")] * 2 + [("2", "12")] * 2
    assert "6 epochs, 12 optimiser steps" in " ".join(capsys.readouterr().err.split())  # the console wraps
    # Each share twice: from scratch, then from the encoder pretrained on all 360 training images.
    assert [r["pretrained"] for r in rows] == ["False", "True", "False", "True"]
    assert [r["pretraining"] for r in rows] == ["none", "simclr", "none", "simclr"]
    assert "| from an encoder pretrained by simclr |" in (out / "label_efficiency.md").read_text()
    assert label_efficiency.start({"pretraining": "imagenet"}) == "from ImageNet weights"
    n = [int(r["labelled_images"]) for r in rows]
    assert abs(n[0] - 90) <= 1 and n[0] == n[1] and n[2] == n[3] == 360  # of the 360 left after validation
    assert json.loads((out / "encoder" / "encoder.json").read_text())["images"] == 360
    for r in rows:
        assert r["split"] == "test" and float(r["auc_ci95_low"]) <= float(r["auc"]) <= float(r["auc_ci95_high"])
        assert float(r["auc"]) > 0.6  # real learning in two epochs
    assert (out / "label_efficiency.png").stat().st_size > 5000 and (out / "label_efficiency.md").exists()
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(f), "--out", str(out), "--label-fractions", "0,2"])
    assert e.value.code == 2
