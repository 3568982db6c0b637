"""Conversion: every variant on a tiny real-data model, validation, the drop gate, Edge TPU readiness, errors."""

import errno
import json
import shutil

import numpy as np
import pytest

from medlite.cli import main
from medlite.convert import edgetpu_readiness
from medlite.convert.pipeline import ConvertError, ConvertOptions, convert_bundle
from medlite.convert.finetune import FineTune
from medlite.edge import Frame, load, read_contract
from medlite.convert.variants import NAMES, parse_variants

pytestmark = pytest.mark.slow  # every test here trains or converts with TensorFlow


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory, data_dir):
    """A deliberately small CNN trained for one epoch on the real data: conversion tests need a model, not a good one."""
    from medlite.train.config import load_config
    from medlite.train.pipeline import train_bundle

    config = load_config(family="small_cnn").updated(epochs=1, model_options={"width": 4, "dense": 8})
    out = tmp_path_factory.mktemp("tiny") / "bundle"
    train_bundle("pneumoniamnist", config, out, data_dir=data_dir)
    return out


@pytest.fixture(scope="module")
def all_variants(tiny_bundle, tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("conv") / "models"
    options = ConvertOptions(variants=list(NAMES), n_calibration=50, data_dir=str(data_dir), allow_drop=True,
                             finetune=FineTune(qat_epochs=1, prune_epochs=1, sparsity=0.5))
    manifest = convert_bundle(tiny_bundle, out, options)
    return out, manifest


def test_every_variant_converts_and_carries_its_contract(all_variants):
    out, manifest = all_variants
    assert [e["variant"] for e in manifest["variants"]] == list(NAMES)
    for e in manifest["variants"]:
        path = out / e["file"]
        assert path.stat().st_size == e["size_bytes"]
        c = read_contract(path.read_bytes())
        assert c.provenance["variant"] == e["variant"] and c.threshold == e["metrics"]["threshold"]
        model = load(path)
        assert model.sha256 == e["sha256"]
        for key in ("auc", "agreement_with_fp32", "threshold", "score_diff_mean", "score_diff_max", "auc_change"):
            assert key in e["metrics"]
        assert e["test"]["auc"] > 0.5
    v = {e["variant"]: e for e in manifest["variants"]}
    for name in ("int8", "int8-qat", "int8-pruned"):
        assert read_contract((out / v[name]["file"]).read_bytes()).input.dtype == "int8"
        assert "edgetpu" in v[name]
    assert read_contract((out / "int16x8.tflite").read_bytes()).input.dtype == "float32"
    # The size bar (int8 at most 0.3 of fp32) is for real models (benchmarks/RESULTS.md); on this 4-filter
    # model the contract and the graph's own structure are most of the file, so only the order is checked.
    assert v["int8"]["size_bytes"] < v["fp16"]["size_bytes"] < v["fp32"]["size_bytes"]
    assert v["int8-pruned"]["sparsity"] >= 0.45
    assert v["int8-pruned"]["size_gzip_bytes"] < v["int8"]["size_gzip_bytes"]
    assert v["int8"]["layer_errors"] and {"tensor", "mean_squared_error", "max_abs_error", "scale"} <= set(
        v["int8"]["layer_errors"][0])
    md = (out / "convert.md").read_text()
    assert "worst layers by quantization error" in md and "int8-pruned" in md
    readiness = (out / "edgetpu.md").read_text()
    if shutil.which("edgetpu_compiler"):  # what the machine makes true: a build and the compiler's verdict
        assert (out / "int8_edgetpu.tflite").exists() and "edgetpu_compiler: exit 0" in readiness
    else:
        assert "edgetpu_compiler is not on the PATH" in readiness


def test_float_layers_keep_the_worst_layers_in_float(tiny_bundle, tmp_path, data_dir):
    manifest = convert_bundle(tiny_bundle, tmp_path / "m", ConvertOptions(
        variants=["int8"], n_calibration=50, data_dir=str(data_dir), float_layers=2, allow_drop=True))
    int8 = manifest["variants"][1]
    assert int8["flags"]["float_layers"] == [e["tensor"] for e in int8["layer_errors"][:2]]
    assert int8["edgetpu"]["cpu"] > 0  # float layers cannot run on the Edge TPU, and the report says so


def test_drop_gate_flags_and_exits_nonzero(tiny_bundle, tmp_path, data_dir, capsys):
    # A budget of -1 asks every variant to gain a full unit of AUC: every non-reference variant is flagged.
    args = ["convert", str(tiny_bundle), "--variants", "dynamic", "--data-dir", str(data_dir), "--max-auc-drop", "-1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 1
    assert "AUC drop above -1.0 on validation" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--allow-drop"]) == 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [e["flagged"] for e in manifest["variants"]] == [True, True]


def test_existing_output_is_not_overwritten_without_force(tiny_bundle, tmp_path, data_dir, capsys):
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["convert", str(tiny_bundle), "--out", str(out), "--data-dir", str(data_dir)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def test_not_a_bundle(tmp_path, capsys):
    assert main(["convert", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert "not a medlite bundle" in capsys.readouterr().err


def test_calibration_data_missing(tiny_bundle, tmp_path, monkeypatch, capsys):
    moved = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, moved)
    info = json.loads((moved / "bundle.json").read_text())
    info["data_source"] = "gonemnist"
    (moved / "bundle.json").write_text(json.dumps(info))
    monkeypatch.setenv("MEDLITE_DATA_DIR", str(tmp_path))
    assert main(["convert", str(moved), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "needed for calibration and validation" in err and "gonemnist" in err
    assert not (tmp_path / "m").exists()


def test_full_disk_leaves_nothing_behind(tiny_bundle, tmp_path, data_dir, monkeypatch):
    import medlite.convert.pipeline as pipeline

    real = pipeline.embed_contract
    calls = []

    def failing(tfl, contract):
        calls.append(1)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tfl, contract)

    monkeypatch.setattr(pipeline, "embed_contract", failing)
    with pytest.raises(ConvertError, match="the disk is full"):
        convert_bundle(tiny_bundle, tmp_path / "m", ConvertOptions(variants=["fp32", "int8"], n_calibration=20,
                                                                   data_dir=str(data_dir)))
    assert list(tmp_path.iterdir()) == []


def test_mistyped_variant():
    with pytest.raises(ValueError, match="did you mean 'int8-qat'"):
        parse_variants("fp32,int8-qta")
    assert parse_variants("all") == list(NAMES)


def test_readiness_names_the_unsupported_op_and_the_split(data_dir):
    """A model built to contain ELU, which full-integer TFLite runs but the Edge TPU does not."""
    from medlite.convert.export import convert
    from medlite.measure import datasets
    from medlite.train.tf import keras

    L = keras.layers
    inp = keras.Input((28, 28, 1))
    x = L.Conv2D(4, 3, name="conv_a")(inp)
    x = L.ELU(name="not_on_tpu")(x)
    x = L.Conv2D(4, 3, name="conv_b")(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Softmax()(L.Dense(2)(x))
    model = keras.Model(inp, out)
    images = datasets.load("pneumoniamnist", data_dir).splits["train"].images[:50, :, :, None] / np.float32(255)
    report = edgetpu_readiness.check(convert(model, "int8", calibration=images, n_calibration=50))
    ops = report["ops"]
    elu = next(o for o in ops if o["op"] == "ELU")
    assert not elu["edgetpu"] and "ELU is not an Edge TPU operation" in elu["reason"] and "not_on_tpu" in elu["output"]
    # TFLite has no int8 ELU: the converter keeps it in float behind a DEQUANTIZE, where the graph splits.
    split = report["split_at"]
    assert ops[split]["op"] == "DEQUANTIZE" and split == elu["index"] - 1
    assert all(o["edgetpu"] for o in ops[:split])
    assert all(not o["edgetpu"] for o in ops[split:])
    assert "after the split" in ops[-1]["reason"] and ops[-1]["op"] == "SOFTMAX"
    assert f"splits at op {split} (DEQUANTIZE" in report["summary"]


def test_compiler_log_is_parsed_and_compared():
    log = ("Edge TPU Compiler version 16.0.384591198\nOperator                       Count      Status\n\n"
           "CONV_2D                        2          Mapped to Edge TPU\nELU                            1          "
           "Operation not supported\nSOFTMAX                        1          Mapped to Edge TPU\n")
    rows = edgetpu_readiness.parse_compiler_log(log)
    assert rows[1] == {"op": "ELU", "count": 1, "status": "Operation not supported"}
    static = {"ops": [{"op": "CONV_2D", "edgetpu": True}, {"op": "CONV_2D", "edgetpu": True},
                      {"op": "ELU", "edgetpu": False}, {"op": "SOFTMAX", "edgetpu": False}]}
    assert edgetpu_readiness.compare_with_compiler(static, rows) == [
        "SOFTMAX: predicted 0 on the Edge TPU, compiler mapped 1"]


def test_op_that_cannot_be_converted_is_named_with_its_layer(data_dir):
    from medlite.convert.export import ConversionError, convert
    from medlite.measure import datasets
    from medlite.train.tf import keras, tf

    L = keras.layers
    inp = keras.Input((28, 28, 1))
    x = L.Conv2D(4, 3, name="conv_a")(inp)
    x = L.Lambda(lambda t: tf.math.cumprod(t, axis=1), name="running_product")(x)  # no TFLite kernel
    out = L.Softmax()(L.Dense(2)(L.GlobalAveragePooling2D()(x)))
    model = keras.Model(inp, out)
    images = datasets.load("pneumoniamnist", data_dir).splits["train"].images[:20, :, :, None] / np.float32(255)
    with pytest.raises(ConversionError) as e:
        convert(model, "int8", calibration=images, n_calibration=20)
    msg = str(e.value)
    assert "could not quantize the model as int8" in msg and "tf.Cumprod" in msg and "running_product" in msg


def test_float_layers_auto(tiny_bundle, tmp_path, data_dir, monkeypatch):
    import medlite.convert.pipeline as pipeline

    ok = convert_bundle(tiny_bundle, tmp_path / "a", ConvertOptions(
        variants=["int8"], n_calibration=50, data_dir=str(data_dir), float_layers="auto", max_auc_drop=1.0))
    assert ok["variants"][1]["flags"]["float_layers"] == []  # int8 already within budget: nothing kept in float
    monkeypatch.setattr(pipeline, "MAX_AUTO_FLOAT_LAYERS", 2)
    # A budget no model can meet (AUC must rise by 1): auto tries 0, 1, 2 float layers, keeps 2 and says so.
    none = convert_bundle(tiny_bundle, tmp_path / "b", ConvertOptions(
        variants=["int8"], n_calibration=50, data_dir=str(data_dir), float_layers="auto", max_auc_drop=-1.0,
        allow_drop=True))
    e = none["variants"][1]
    assert len(e["flags"]["float_layers"]) == 2 and "no count up to 2 float layers" in e["float_layers_note"]


def test_calibrated_variants_end_in_logits_and_float_variants_in_their_own_softmax(all_variants, data_dir):
    """A variant with calibrated (integer) activations has no SOFTMAX in its graph: its scores are
    softmax(dequantized logits), computed on the host in float. A variant computing in float keeps its float
    softmax: its scores are its output as it is, probabilities summing to 1."""
    from ai_edge_litert.interpreter import Interpreter

    from medlite.convert.edgetpu_readiness import check
    from medlite.convert.variants import VARIANTS
    from medlite.measure import datasets

    out, manifest = all_variants
    images = datasets.load("pneumoniamnist", data_dir).splits["test"].images[:30]
    for e in manifest["variants"]:
        blob = (out / e["file"]).read_bytes()
        contract, in_float = read_contract(blob), VARIANTS[e["variant"]].float_activations
        assert contract.activation == ("none" if in_float else "softmax"), e["variant"]
        assert contract.features_output is not None and contract.ood
        assert ("SOFTMAX" in {op["op"] for op in check(blob)["ops"]}) == in_float, e["variant"]
        model, raw = load(blob, backend="cpu"), Interpreter(model_content=blob)
        raw.allocate_tensors()
        (inp,), outp = raw.get_input_details(), raw.get_output_details()[contract.scores_output]
        for img in images:
            x = model.prepare(model.frames(img)[0])
            raw.set_tensor(inp["index"], x)
            raw.invoke()
            out_raw = raw.get_tensor(outp["index"]).reshape(-1)
            if in_float:
                assert out_raw.dtype == np.float32 and abs(float(out_raw.sum()) - 1) < 1e-5
                assert np.array_equal(model.classify(x).score_array, out_raw) and model.classify(x).scores == dict(
                    zip(contract.labels, out_raw.tolist()))
                continue
            logits = out_raw.astype(np.float64)
            scale, zero = outp["quantization"]
            logits = (logits - zero) * scale if scale else logits
            expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            assert np.allclose(model.classify(x).score_array, expected, atol=1e-6)
        assert e["test"]["distinct_scores"] > 1


def test_validation_shares_images_among_interpreters_and_gets_what_one_gets(all_variants, data_dir):
    """Conversion's validation runs the images on a thread per core, each with an interpreter of its own:
    every image's scores and features are what a single interpreter gives, in the images' order."""
    from medlite.convert.validate import infer_prepared
    from medlite.measure import datasets

    x = datasets.load("pneumoniamnist", data_dir).splits["val"].images[:37, :, :, None].astype(np.float32) / 255
    blob = (all_variants[0] / "int8.tflite").read_bytes()
    one, none = infer_prepared(blob, x, None, workers=1)
    three, _ = infer_prepared(blob, x, None, workers=3)
    assert none is None and one[1] is not None
    assert np.array_equal(one[0], three[0]) and np.array_equal(one[1], three[1])


def test_the_converter_given_only_the_weights_writes_the_bytes_it_writes_given_the_keras_model(tiny_bundle,
                                                                                               data_dir):
    """converter_for hands TensorFlow's converter a module holding the weights, not the Keras model (whose
    serialization cost 2-4 s a variant, more with QAT's wrappers): every byte of the result is the same, for
    a plain, a calibrated 8-bit and a quantization-aware model."""
    from medlite.convert import export
    from medlite.convert.finetune import quantization_aware
    from medlite.train.bundle import load_bundle
    from medlite.train.pipeline import load_data_for
    from medlite.train.tf import tf

    def given_the_keras_model(model, input_shape):
        spec = tf.TensorSpec([1, *input_shape], tf.float32, name="image")
        fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        return tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], model)

    bundle = load_bundle(tiny_bundle)
    data = load_data_for("pneumoniamnist", bundle.config, data_dir)
    calibration = data.splits["train"].x
    qat = quantization_aware(bundle, data, FineTune(qat_epochs=1))
    for model, variant in ((bundle.model, "fp32"), (bundle.model, "int8"), (qat, "int8-qat")):
        cart = export.cart_model(model)[0]
        light = export.convert(cart, variant, calibration=calibration, n_calibration=20)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(export, "converter_for", given_the_keras_model)
            assert export.convert(cart, variant, calibration=calibration, n_calibration=20) == light, variant


def test_every_variant_computes_its_guard_in_the_graph(all_variants, data_dir):
    """Each variant's own guard output (float32 ops after int8, int16, float16 or float features) against the
    detector's float64 arithmetic on the same call's features, on 40 real test images; on the Edge TPU
    variants the readiness check reports the guard's ops as the CPU's, after the Edge TPU's part."""
    from medlite.convert.guard_graph import PREFIX
    from medlite.measure import datasets

    out, manifest = all_variants
    images = datasets.load("pneumoniamnist", data_dir).splits["test"].images[:40]
    for e in manifest["variants"]:
        model = load(out / e["file"])
        assert model.contract.ood["output"] == len(model._session.outputs) - 1, e["variant"]
        for img in images:
            p = model.classify(model.prepare(Frame(img.astype(np.float32)[..., None])), features=True)
            guard, (_, host) = p.ood_score, model.ood_score(p.features)
            assert guard == pytest.approx(host, rel=1e-4), e["variant"]
        if "edgetpu" in e:
            ops, n = e["edgetpu"]["ops"], e["edgetpu"]["guard_ops"]
            assert n == 9 and all(o["output"].startswith(PREFIX) and not o["edgetpu"] for o in ops[-n:])
            assert not any(o["output"].startswith(PREFIX) for o in ops[:-n])
            assert e["edgetpu"]["cpu"] == sum(not o["edgetpu"] for o in ops[:-n])
            assert "guard's 9 float ops run on the CPU" in e["edgetpu"]["summary"]


def test_sign_key_signs_every_model_written_and_a_cart_that_trusts_the_key_runs_them(tiny_bundle, tmp_path, data_dir):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from medlite.edge.signature import public_key, signature_path

    key = ec.generate_private_key(ec.SECP384R1())
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    (tmp_path / "k.pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    out = tmp_path / "m"
    assert main(["convert", str(tiny_bundle), "--variants", "int8", "--calibration-images", "50", "--allow-drop",
                 "--data-dir", str(data_dir), "--out", str(out), "--sign-key", str(tmp_path / "k.pem"), "-q"]) == 0
    fingerprint = public_key(tmp_path / "k.pub").fingerprint
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["signed_by"] == fingerprint and "by key " + fingerprint in (out / "convert.md").read_text()
    models = sorted(out.glob("*.tflite"))
    assert [m.name for m in models][:2] == ["fp32.tflite", "int8.tflite"]
    for m in models:
        assert signature_path(m).is_file()
        assert load(m, trust=[tmp_path / "k.pub"]).signed_by == fingerprint
