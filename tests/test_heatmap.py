"""Heatmaps: the arithmetic against TensorFlow on the same weights, the records, the files, and int8 against
fp32, on real chest X-rays and DICOMs."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from medlite.edge import load
from medlite.edge.heatmap import Cam, region, render

from .test_serve import OUTSIDE


@pytest.fixture(scope="module")
def test_images(data_dir):
    with np.load(data_dir / "pneumoniamnist.npz") as z:
        return z["test_images"][:8], z["test_labels"][:8].ravel()


def _gradcam_with_tensorflow(keras_model, image: np.ndarray, cls: int) -> tuple[np.ndarray, float]:
    """Grad-CAM in its exact form (gradient x activation, summed over channels, times the number of
    positions) of the class's logit, and that logit: TensorFlow's own gradients on the bundle's weights."""
    import tensorflow as tf

    from medlite.train.tf import keras

    gap = keras_model.get_layer("gap")
    trunk = keras.Model(keras_model.inputs, gap.input)
    head = keras_model.layers[keras_model.layers.index(gap) + 1 : -1]  # after pooling, before the softmax
    fmap = tf.convert_to_tensor(trunk(image[None], training=False))
    with tf.GradientTape() as tape:
        tape.watch(fmap)
        x = tf.reduce_mean(fmap, axis=(1, 2))
        for layer in head:
            x = layer(x, training=False)
        logit = x[0, cls]
    grad = tape.gradient(logit, fmap)
    positions = fmap.shape[1] * fmap.shape[2]
    return (tf.reduce_sum(fmap * grad, axis=-1)[0] * positions).numpy(), float(logit)


def test_the_fp32_heatmap_is_tensorflows_gradcam_on_the_same_weights(bundle, fp32_model, test_images):
    """The demo's small CNN (pooling, dense, ReLU, dense): medlite's map from the converted fp32 model equals
    Grad-CAM computed by TensorFlow on the trained Keras model, and its mean plus the head's offset is the
    logit, on real test X-rays."""
    from medlite.measure.bench import frame_of
    from medlite.train.bundle import load_bundle

    keras_model = load_bundle(bundle).model
    model = load(fp32_model)
    assert model.has_heatmap and len(model.contract.heatmap["layers"]) == 2  # the ReLU-gated head
    cam = Cam.from_dict(model.contract.heatmap)
    pos = model.contract.positive_index
    images, _ = test_images
    for img in images:
        frame = frame_of(img)
        x = model.prepare(frame)
        outputs = model.session.run(x)
        fmap = outputs[cam.output][0]  # a float model: its outputs as they are
        features = outputs[model.contract.features_output].reshape(-1)
        ours = cam.class_map(fmap, features, pos)
        reference, logit = _gradcam_with_tensorflow(keras_model, x[0].astype(np.float32), pos)
        assert ours.shape == reference.shape == fmap.shape[:2]
        np.testing.assert_allclose(ours, reference, rtol=1e-3, atol=1e-3 * np.abs(reference).max())
        assert ours.mean() + cam.logit_offset(features, pos) == pytest.approx(logit, abs=1e-3)
        assert frame.image_size == (28, 28)


def test_int8_heatmaps_follow_fp32(fp32_model, int8_model, test_images):
    """A clinician sees the int8 map on the cart: on real test images it correlates with fp32's."""
    from medlite.measure.bench import frame_of

    fp32, int8 = load(fp32_model), load(int8_model)
    rs = []
    for img in test_images[0]:
        a = fp32.predict_frame(frame_of(img), heatmap=True).heatmap.astype(float)
        b = int8.predict_frame(frame_of(img), heatmap=True).heatmap.astype(float)
        if a.std() and b.std():
            rs.append(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    assert len(rs) >= 6 and np.mean(rs) >= 0.8


def test_render_lays_the_map_over_the_cropped_region_in_the_images_own_pixels():
    cmap = np.zeros((4, 4))
    cmap[1, 2] = 2.0
    cmap[1, 3] = 1.5
    out = render(cmap, 300, 200, "center")  # the model saw the 200x200 centre of a 300x200 image
    assert region(300, 200, "center") == (50, 0, 200, 200)
    assert out.image.shape == (300, 200) and out.image[out.peak[1], out.peak[0]] == 255
    x0, y0, x1, y1 = out.box
    assert 50 <= y0 <= out.peak[1] < y1 <= 250 and x0 <= out.peak[0] < x1 <= 200
    assert out.image[:50].max() == 0 and out.image[250:].max() == 0  # nothing outside what the model saw
    cold = render(-np.ones((4, 4)), 30, 30, "center")
    assert cold.image.max() == 0 and cold.box == (0, 0, 30, 30)


@pytest.mark.parametrize("crop, height, width, top, left, side_y, side_x", [
    ("none", 120, 200, 0, 0, 120, 200),  # the map stretched over a wide image
    ("center", 300, 200, 50, 0, 200, 200),  # a tall image: the model saw its 200x200 centre
])
def test_an_asymmetric_map_peaks_where_its_hot_cell_lies_in_the_images_pixels(crop, height, width, top, left,
                                                                               side_y, side_x):
    """One hot cell off both diagonals of a 4x4 map (row 1, column 2) on a non-square image: the peak is that
    cell's centre in the image's own pixels (x from the column, y from the row), so a transposed or mirrored
    map, or swapped x and y, would put it elsewhere; the box is the cell's neighbourhood."""
    cmap = np.zeros((4, 4))
    cmap[1, 2] = 1.0
    out = render(cmap, height, width, crop)
    cell_y, cell_x = side_y / 4, side_x / 4
    centre_x, centre_y = left + 2.5 * cell_x, top + 1.5 * cell_y  # pixel centres: x + 0.5 of the pixel grid
    assert out.image.shape == (height, width)
    assert abs(out.peak[0] + 0.5 - centre_x) <= 1 and abs(out.peak[1] + 0.5 - centre_y) <= 1, out.peak
    x0, y0, x1, y1 = out.box
    assert left + 2 * cell_x - cell_x / 2 <= x0 <= out.peak[0] < x1 <= left + 3 * cell_x + cell_x / 2
    assert top + cell_y - cell_y / 2 <= y0 <= out.peak[1] < y1 <= top + 2 * cell_y + cell_y / 2


def test_predict_heatmap_writes_maps_at_the_images_own_size(int8_model, dicom_dir, data_dir, tmp_path):
    """`medlite predict --heatmap DIR --overlay DIR` on a 1955x1841 JPEG 2000 CR (decoded at half size), a DX
    and a 1024 px PNG: each ok record names an 8-bit single-channel PNG of the image's own size whose
    brightest pixel is the record's peak, inside its box; ultrasound is rejected and gets no map."""
    inputs = [dicom_dir / "RG1_J2KI.dcm", dicom_dir / "nih_cxr14_dx_nofinding.dcm", dicom_dir / "US1_UNCR.dcm",
              sorted((data_dir / "images").glob("*.png"))[0]]
    out = tmp_path / "p.jsonl"
    proc = subprocess.run([sys.executable, "-m", "medlite", "predict", str(int8_model), *map(str, inputs), "--out",
                           str(out), "--heatmap", str(tmp_path / "maps"), "--overlay", str(tmp_path / "over"), "-q"],
                          cwd=OUTSIDE, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    sizes = {"RG1_J2KI.dcm": (1955, 1841), "nih_cxr14_dx_nofinding.dcm": (1024, 1024)}
    assert [r["status"] for r in records] == ["ok", "ok", "rejected", "ok"]
    for r in records:
        if r["status"] != "ok":
            assert "heatmap" not in r
            continue
        heat = cv2.imread(r["heatmap"], cv2.IMREAD_UNCHANGED)
        assert heat.dtype == np.uint8 and heat.ndim == 2
        name = r["file"].rsplit("/", 1)[-1]
        own = sizes[name] if name in sizes else cv2.imread(r["file"], cv2.IMREAD_GRAYSCALE).shape
        assert heat.shape == own
        x, y = r["peak"]
        x0, y0, x1, y1 = r["box"]
        assert x0 <= x < x1 and y0 <= y < y1
        # A map with positive evidence peaks at 255 there; one with none anywhere is all 0, its peak the centre of
        # the region the model saw and its box all of that region.
        assert heat[y, x] == 255 or (heat.max() == 0 and (x, y) == ((x0 + x1) // 2, (y0 + y1) // 2))
        picture = cv2.imread(r["overlay"], cv2.IMREAD_UNCHANGED)
        assert picture.ndim == 3 and picture.shape[2] == 3 and max(picture.shape[:2]) <= 1024


def test_a_model_without_a_feature_map_says_so(int8_model, dicom_dir, tmp_path):
    from medlite.convert.contract_writer import embed_contract
    from medlite.edge.contract import read_contract

    blob = int8_model.read_bytes()
    stripped = tmp_path / "old.tflite"
    stripped.write_bytes(embed_contract(blob, read_contract(blob).replace(heatmap={})))
    proc = subprocess.run([sys.executable, "-m", "medlite", "predict", str(stripped),
                           str(dicom_dir / "nih_cxr14_dx_nofinding.dcm"), "--heatmap", str(tmp_path / "m")],
                          cwd=OUTSIDE, capture_output=True, text=True)
    assert proc.returncode == 2 and "gives no feature map" in proc.stderr


def test_a_pooling_then_dense_head_is_plain_cam():
    """One dense layer after pooling (MobileNetV2's and the ResNet's head): the map is F @ w_c, and its mean
    plus the bias is the class's logit."""
    from medlite.edge.heatmap import HeadLayer

    rng = np.random.default_rng(0)
    fmap, kernel, bias = rng.normal(size=(7, 7, 16)), rng.normal(size=(16, 3)), rng.normal(size=3)
    cam = Cam.from_dict(Cam(2, (HeadLayer(kernel, bias, False),)).to_dict())
    logits = fmap.mean(axis=(0, 1)) @ kernel + bias
    for c in range(3):
        m = cam.class_map(fmap, None, c)
        np.testing.assert_allclose(m, fmap @ kernel[:, c].astype(np.float32), rtol=1e-5)
        assert m.mean() + cam.logit_offset(None, c) == pytest.approx(logits[c], rel=1e-5)
