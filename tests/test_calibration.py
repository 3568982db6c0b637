"""A multi-class model's decision, calibrated on validation: on real BUSI breast ultrasound (benign, malignant,
normal), trained, converted and run through the cart's runtime."""

import json

import numpy as np
import pytest

from medlite.cli import main
from medlite.edge import decide, load
from medlite.edge.heatmap import Cam, render
from medlite.edge.scores import dequantize
from medlite.train.calibration import balanced_accuracy, decisions, fit


@pytest.fixture(scope="module")
def busi_models(tmp_path_factory, data_dir):
    """The default recipe on all 516 BUSI images at 28 px for 3 epochs (a weak model, on purpose: its argmax
    leans on the class weighting), converted to fp32 and int8."""
    out = tmp_path_factory.mktemp("busi")
    assert main(["train", "--data", str(data_dir / "busi" / "images"), "--image-size", "28", "--epochs", "3",
                 "--pretrain", "none", "--out", str(out / "bundle"), "-q"]) == 0
    assert main(["convert", str(out / "bundle"), "--variants", "fp32,int8", "--out", str(out / "models"),
                 "--allow-drop", "-q"]) == 0
    return out


def _validation(bundle):
    """The bundle's own training data, split as training split it (the recipe's seed)."""
    import yaml

    from medlite.train.config import TrainConfig
    from medlite.train.pipeline import load_data_for

    config = TrainConfig().updated(**yaml.safe_load((bundle / "config.yaml").read_text()))
    return load_data_for(json.loads((bundle / "bundle.json").read_text())["data_source"], config)


def test_the_calibration_is_chosen_on_validation_and_beats_the_argmax_there(busi_models):
    bundle = busi_models / "bundle"
    contract = json.loads((bundle / "contract.json").read_text())
    assert contract["labels"] == ["benign", "malignant", "normal"] and contract["positive_index"] is None
    cal = contract["calibration"]
    assert cal["method"] == "balanced" and len(cal["weights"]) == 3 and all(w > 0 for w in cal["weights"])
    data = _validation(bundle)
    model = load(busi_models / "models" / "fp32.tflite", backend="cpu")
    from medlite.edge.preprocess import quantize

    pv = np.stack([model.classify(quantize(x[None], model.contract.input)).score_array for x in data.splits["val"].x])
    y = data.splits["val"].y
    weights = model.contract.calibration["weights"]
    calibrated = balanced_accuracy(y, decisions(pv, weights), 3)
    assert calibrated >= balanced_accuracy(y, decisions(pv, None), 3)
    assert calibrated >= balanced_accuracy(y, decisions(pv, fit("prior", y, pv, np.bincount(
        data.splits["train"].y, minlength=3))["weights"]), 3)
    m = json.loads((bundle / "metrics.json").read_text())["validation"]
    assert m["n"] == len(y) and sum(map(sum, m["confusion"])) == len(y)
    assert [sum(r) for r in m["confusion"]] == np.bincount(y, minlength=3).tolist()
    assert len(m["per_class"]) == 3 and 0 <= m["balanced_accuracy"] <= 1


def test_the_cart_decides_by_each_variants_own_weights(busi_models, data_dir):
    """On every BUSI image, the runtime's label is the highest score times its weight, computed here in numpy
    from the scores it reports; on some images that differs from the plain highest score, so the weights are
    really applied."""
    files = sorted((data_dir / "busi" / "images").rglob("*.png"))
    for variant in ("fp32", "int8"):
        model = load(busi_models / "models" / f"{variant}.tflite", backend="cpu")
        c = model.contract
        assert c.calibration["method"] == "balanced" and c.operating_point.startswith("class weights")
        w = np.asarray(c.calibration["weights"])
        differs = 0
        for f in files[::4]:
            p = model.predict(str(f))
            s = np.array([p.scores[k] for k in c.labels], dtype=np.float64)
            assert p.label == c.labels[int(np.argmax(s * w))]
            assert decide(list(p.scores.values()), c) == decide(s[None].astype(np.float32), c)[0]
            differs += int(np.argmax(s * w) != np.argmax(s))
        assert differs > 0, variant


def test_convert_md_and_the_manifest_show_each_class(busi_models):
    manifest = json.loads((busi_models / "models" / "manifest.json").read_text())
    for e in manifest["variants"]:
        assert len(e["calibration"]["weights"]) == 3
    md = (busi_models / "models" / "convert.md").read_text()
    assert "class by class on validation" in md and "Confusion matrix" in md
    for label in ("benign", "malignant", "normal"):
        assert f"| {label} |" in md


def test_a_multi_class_heatmap_shows_the_most_probable_finding_not_normal(busi_models, data_dir):
    """BUSI's normal images: whatever the decision, the map is of the most probable lesion class (benign or
    malignant), computed here from the session's own outputs with the contract's head."""
    model = load(busi_models / "models" / "fp32.tflite", backend="cpu")
    c = model.contract
    cam = Cam.from_dict(c.heatmap)
    for f in sorted((data_dir / "busi" / "images" / "normal").glob("*.png"))[:6]:
        (frame,) = model.frames(str(f))
        x = model.prepare(frame)
        p = model.predict_frame(frame, heatmap=True, x=x)
        outputs = model.session.run(x)
        features = dequantize(outputs[c.features_output], None)
        shown = max((0, 1), key=lambda k: p.scores[c.labels[k]])  # benign or malignant
        expected = render(cam.class_map(outputs[cam.output][0], features, shown), *frame.image_size,
                          c.preprocess.crop, cam.box_fraction)
        assert np.array_equal(p.heatmap, expected.image) and p.peak == expected.peak
