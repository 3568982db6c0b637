"""Training with the findings' masks (`medlite train --masks`) on real BUSI images and their expert masks: the
masks are read aligned with their images, ride through augmentation with them, teach the model, and leave the
deployed model as it was."""

import csv
import json
import re

import numpy as np
import pytest

from medlite.cli import main
from medlite.edge.contract import InputSpec, Preprocess
from medlite.edge.errors import DataError
from medlite.train.data import find_masks, load_training_data

pytestmark = pytest.mark.slow  # these train with TensorFlow


@pytest.fixture(scope="module")
def busi_masked(data_dir, tmp_path_factory):
    """A class folder of real BUSI images (links: 16 benign, 16 malignant, 8 normal) and a test split of 4,
    and BUSI's masks folder."""
    root = tmp_path_factory.mktemp("busi-masked")
    for split, start, counts in (("train", 0, (16, 16, 8)), ("test", 40, (2, 2, 0))):
        for cls, n in zip(("benign", "malignant", "normal"), counts):
            (root / split / cls).mkdir(parents=True)
            for f in sorted((data_dir / "busi" / "images" / cls).glob("*.png"))[start:start + n]:
                (root / split / cls / f.name).symlink_to(f)
    return root, data_dir / "busi" / "masks"


def _index(data_dir) -> dict:
    with open(data_dir / "busi" / "INDEX.tsv", newline="") as f:
        return {row["image"]: row for row in csv.DictReader(f, delimiter="\t")}


def test_a_mask_is_cropped_and_scaled_as_its_image_is(data_dir):
    """A real lesion's mask at the model's input: the centre crop and the scaling move it exactly as they move
    the image, so its bounding box is INDEX.tsv's box moved the same way (to within a pixel)."""
    spec, pre = InputSpec(64, 64, 1), Preprocess()
    index = _index(data_dir)
    for name in ("images/benign/benign (10).png", "images/malignant/malignant (1).png"):
        row = index[name]
        w, h = int(row["width"]), int(row["height"])
        mask = find_masks(data_dir / "busi" / "masks" / name.removeprefix("images/"), (h, w), pre, spec)
        side = min(w, h)
        top, left = (h - side) // 2, (w - side) // 2
        scale = 64 / side
        ys, xs = np.nonzero(mask > 0.5)
        x0, y0 = (int(row["bbox_x0"]) - left) * scale, (int(row["bbox_y0"]) - top) * scale
        x1, y1 = (int(row["bbox_x1"]) - left) * scale, (int(row["bbox_y1"]) - top) * scale
        assert abs(xs.min() - max(x0, 0)) <= 1.5 and abs(xs.max() + 1 - min(x1, 64)) <= 1.5
        assert abs(ys.min() - max(y0, 0)) <= 1.5 and abs(ys.max() + 1 - min(y1, 64)) <= 1.5
    row = index["images/normal/normal (10).png"]
    normal = find_masks(data_dir / "busi" / "masks" / "normal" / "normal (10).png",
                        (int(row["height"]), int(row["width"])), pre, spec)
    assert normal is not None and not normal.any()  # a normal image's mask is there, and empty
    with pytest.raises(DataError, match=r"malignant \(1\)_mask.png: not a mask of its image \(.*the image is 10x10"):
        find_masks(data_dir / "busi" / "masks" / "malignant" / "malignant (1).png", (10, 10), pre, spec)


@pytest.mark.parametrize("mixup", [0.0, 0.4])
def test_masks_load_for_training_images_only_and_ride_through_augmentation(busi_masked, mixup):
    """Training and validation images get their masks, the test split none. In the training batches, a mask
    moves with its image: a batch whose images are their own masks gives back, scaled to the feature map,
    exactly the mask target it carries; with mixup too, which blends masks as it blends images, and counts a
    blend's mask only where both images' masks are known."""
    from medlite.train.config import TrainConfig
    from medlite.train.fit import make_dataset

    root, masks = busi_masked
    data = load_training_data(str(root), image_size=64, masks=masks)
    tr = data.splits["train"]
    assert tr.masks.shape == (len(tr.y), 64, 64) and not np.isnan(tr.masks).any()
    assert data.splits["val"].masks is not None and data.splits["test"].masks is None
    assert tr.masks[tr.y == data.label_names.index("malignant")].max(axis=(1, 2)).min() > 0.5  # every lesion
    config = TrainConfig(rotation_deg=20, shift=0.1, zoom=0.1, contrast=0, brightness=0, batch_size=8, mixup=mixup)
    x = tr.masks[..., None].copy()
    x[: len(x) // 2] = np.nan  # and where a mask is unknown, its loss weighs nothing
    masks_in = tr.masks.copy()
    masks_in[: len(x) // 2] = np.nan
    ds = make_dataset(np.nan_to_num(x), tr.y, 3, np.ones(3), config, masks=masks_in, mask_size=(16, 16))
    import tensorflow as tf

    seen = 0
    for xb, (yb, mb), (wb, kb) in ds:
        moved = tf.image.resize(xb, (16, 16), method="area").numpy()
        assert np.allclose(moved, mb.numpy(), atol=1e-5)
        seen += int(kb.numpy().sum())
    known = len(x) - len(x) // 2
    assert seen == known if not mixup else 0 < seen < known  # a blend with an unknown mask counts for nothing
    assert np.abs(moved).sum() > 0  # the check compared masks, not empty images


def test_train_with_masks_teaches_the_finding_and_deploys_the_same_model(busi_masked, tmp_path, capsys):
    """`train --masks` on real images: it says how many masks it used, the finding's loss is part of training
    (its weights differ from a run without masks, same seed), and the bundle's model is the plain classifier
    (no extra output), which converts to int8 and runs on the cart with its heatmap."""
    from medlite.train.bundle import load_bundle

    root, masks = busi_masked
    common = ["train", "--data", str(root), "--image-size", "64", "--epochs", "2", "--pretrain", "none"]
    assert main([*common, "--masks", str(masks), "--out", str(tmp_path / "m")]) == 0
    said = re.search(r"finding masks: (\d+) of \1 training images", capsys.readouterr().err)  # every one has its mask
    assert said and int(said.group(1)) > 30
    assert main([*common, "--out", str(tmp_path / "p")]) == 0
    with_masks, plain = load_bundle(tmp_path / "m"), load_bundle(tmp_path / "p")
    assert json.loads((tmp_path / "m" / "bundle.json").read_text())["finding_masks"] == int(said.group(1))
    assert [w.shape for w in with_masks.model.get_weights()] == [w.shape for w in plain.model.get_weights()]
    assert len(with_masks.model.outputs) == 1
    assert any(not np.allclose(a, b) for a, b in zip(with_masks.model.get_weights(), plain.model.get_weights()))
    assert main(["convert", str(tmp_path / "m"), "--variants", "int8", "--out", str(tmp_path / "models"),
                 "--allow-drop", "-q"]) == 0
    from medlite.edge import load

    model = load(next((tmp_path / "models").glob("*int8*.tflite")))
    p = model.predict(str(next((root / "test" / "malignant").iterdir())), heatmap=True)
    assert p.label in ("benign", "malignant", "normal") and p.heatmap is not None
    assert main([*common, "--masks", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) != 0
    assert "not a folder of masks" in capsys.readouterr().err


def test_without_the_centre_crop_the_whole_image_and_its_mask_are_scaled(busi_masked, data_dir):
    """``crop="none"`` (a recipe comparison in benchmarks/small_data_recipes.py): the whole image is stretched
    to the input, the contract says so, and a lesion's mask moves with it: its box is INDEX.tsv's scaled by
    64/width and 64/height, with nothing cut."""
    root, masks = busi_masked
    data = load_training_data(str(root), image_size=64, masks=masks, crop="none")
    assert data.preprocess.crop == "none"
    row = _index(data_dir)["images/benign/benign (10).png"]
    w, h = int(row["width"]), int(row["height"])
    mask = find_masks(masks / "benign" / "benign (10).png", (h, w), data.preprocess, data.spec)
    ys, xs = np.nonzero(mask > 0.5)
    x0, x1 = int(row["bbox_x0"]) * 64 / w, int(row["bbox_x1"]) * 64 / w
    y0, y1 = int(row["bbox_y0"]) * 64 / h, int(row["bbox_y1"]) * 64 / h
    assert abs(xs.min() - x0) <= 1.5 and abs(xs.max() + 1 - x1) <= 1.5
    assert abs(ys.min() - y0) <= 1.5 and abs(ys.max() + 1 - y1) <= 1.5
    train = data.splits["train"]
    assert any(np.array_equal(m, mask) for m in train.masks[train.with_mask])
