"""The out-of-distribution guard on real images: foreign ones flagged, the model's own test images not."""

import json

import numpy as np
import pytest

from medlite.cli import main
from medlite.edge import Frame, load
from medlite.edge.ood import OodDetector, fit
from medlite.measure import datasets


def flagged_share(model, sources) -> float:
    """The share of images the model's own guard output flags, as predictions give it."""
    out = []
    for source in sources:
        for frame in model.frames(source):
            p = model.predict_frame(frame)
            assert isinstance(p.in_distribution, bool) and p.ood_score >= 0
            out.append(not p.in_distribution)
    return float(np.mean(out))


@pytest.fixture(scope="module")
def own_test_frames(data_dir):
    return [Frame(img.astype(np.float32)[..., None]) for img in datasets.load("pneumoniamnist", data_dir)
            .splits["test"].images]


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_the_chest_models_guard_flags_breast_ultrasound_and_spares_its_own_test_images(
        demo, data_dir, own_test_frames, variant):
    """BUSI breast ultrasound (516 real images) through the chest X-ray model: a foreign modality.

    The suite's model trains for 3 epochs; its guard catches 84-90% of them (a detector that flags at
    random would catch about 2%). The demo's fully trained model catches 99.8% (benchmarks/RESULTS.md)."""
    model = load(demo / "models" / f"{variant}.tflite")
    assert model.contract.features_output is not None and model.contract.ood["method"] == "mahalanobis"
    busi = sorted((data_dir / "busi" / "images").rglob("*.png"))
    assert len(busi) == 516
    assert flagged_share(model, busi) >= 0.80
    assert flagged_share(model, own_test_frames) <= 0.05


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_the_guard_inside_the_model_gives_the_hosts_float64_score(demo, data_dir, own_test_frames, variant):
    """The guard as the model computes it (float32 ops after its features, convert/guard_graph.py) against
    the detector's float64 arithmetic on the same call's features: 200 of the model's own test images and
    100 breast ultrasound images, within 1e-4 relative (about 1e-6 typical) and the same decision for every
    image not within that of the threshold."""
    model = load(demo / "models" / f"{variant}.tflite")
    guard_at = model.contract.ood["output"]
    assert guard_at == len(model._session.outputs) - 1 and guard_at not in (
        model.contract.scores_output, model.contract.features_output)
    busi = sorted((data_dir / "busi" / "images").rglob("*.png"))[::5][:100]
    frames = own_test_frames[:200] + [f for p in busi for f in model.frames(p)]
    threshold, worst, near = model.contract.ood["threshold"], 0.0, 0
    for frame in frames:
        x = model.prepare(frame)
        p = model.classify(x, features=True)
        guard, (inside, host) = p.ood_score, model.ood_score(p.features)
        assert guard == float(model.session.run(x)[guard_at].reshape(-1)[0])  # the model's own output
        worst = max(worst, abs(guard - host) / host)
        if abs(host - threshold) > 1e-4 * threshold:
            assert (guard <= threshold) == inside
        else:
            near += 1
    assert worst < 1e-4 and near <= 3


def test_a_model_converted_before_the_guard_moved_into_it_is_guarded_by_the_host(int8_model, own_test_frames,
                                                                                   tmp_path):
    """A contract whose guard names no output (as every model converted before it did): the runtime computes
    the score from the features in float64, as OodDetector.score does."""
    from medlite.convert.contract_writer import embed_contract
    from medlite.edge.contract import read_contract

    blob = int8_model.read_bytes()
    old = read_contract(blob)
    ood = {k: v for k, v in old.ood.items() if k != "output"}
    path = tmp_path / "older.tflite"
    path.write_bytes(embed_contract(blob, old.replace(ood=ood)))
    older, model = load(path), load(int8_model)
    for frame in own_test_frames[:50]:
        x = older.prepare(frame)
        p = older.classify(x, features=True)
        assert p.ood_score == OodDetector.from_dict(ood).score(p.features)
        assert p.ood_score == pytest.approx(model.classify(x).ood_score, rel=1e-4)


def test_records_carry_the_guard_and_the_summary_counts_it(int8_model, data_dir, tmp_path, capsys):
    busi = sorted(str(p) for p in (data_dir / "busi" / "images" / "malignant").glob("*.png"))[:10]
    out = tmp_path / "p.jsonl"
    assert main(["predict", str(int8_model), *busi, "--out", str(out), "--workers", "0"]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["status"] == "ok" and r["label"] in ("normal", "pneumonia") for r in recs)  # still scored
    foreign = sum(r["in_distribution"] is False for r in recs)
    assert foreign >= 9 and all(r["ood_score"] > 0 for r in recs)
    assert f"{foreign} of them outside the training distribution" in capsys.readouterr().err


def test_detector_round_trips_and_sets_its_threshold_on_validation():
    rng = np.random.default_rng(0)
    train, val = rng.normal(size=(2000, 16)), rng.normal(size=(500, 16))
    d = fit(train, val, false_alarm_rate=0.02, keep=8)
    assert np.mean([d.score(v) > d.threshold for v in val]) == pytest.approx(0.02, abs=0.005)
    again = OodDetector.from_dict(json.loads(json.dumps(d.to_dict())))
    assert again.score(val[0]) == pytest.approx(d.score(val[0]), rel=1e-5)
    assert d.score(val[0] + 10) > d.threshold  # far from everything seen


def test_score_is_the_mahalanobis_distance_along_the_components_plus_the_residual():
    """The score against the distance written out in float64 from the training covariance's own eigenvectors
    (each kept direction over its variance, every other over the residual's), on features of real shape:
    the detector stores its arrays in float32, which costs at most a part in a million."""
    rng = np.random.default_rng(1)
    train = rng.normal(size=(3000, 128)) * rng.uniform(0.1, 3, size=128)
    d = fit(train, rng.normal(size=(300, 128)), keep=48)
    mean = train.mean(0)
    values, vectors = np.linalg.eigh(np.cov(train, rowvar=False))
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    weights = np.concatenate([1 / values[:48], np.full(128 - 48, 1 / d.residual_variance)])
    for f in rng.normal(size=(20, 128)) * 2:
        expected = float((vectors.T @ (f - mean)) ** 2 @ weights) / 128
        assert d.score(f) == pytest.approx(expected, rel=1e-6)
