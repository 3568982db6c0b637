"""The model contract inside the .tflite: round trip, and refusal of files without one."""

import json

import numpy as np
import pytest

from medlite.convert.contract_writer import embed_contract
from medlite.edge import load, read_contract
from medlite.edge.contract import Contract, InputSpec
from medlite.edge.errors import ModelError


def test_every_written_model_carries_its_contract(demo):
    manifest = json.loads((demo / "models" / "manifest.json").read_text())
    bundle_contract = json.loads((demo / "bundle" / "contract.json").read_text())
    for e in manifest["variants"]:
        c = read_contract((demo / "models" / e["file"]).read_bytes())
        assert c.provenance["variant"] == e["variant"]
        assert c.provenance["source_model_sha256"] == manifest["source_model_sha256"]
        assert c.provenance["training_data_sha256"] == manifest["data"]["sha256"]
        assert c.labels == ("normal", "pneumonia") and c.positive_index == 1
        assert c.threshold == e["metrics"]["threshold"]
        assert c.validation["auc"] == e["metrics"]["auc"]
        assert c.preprocess.color == bundle_contract["preprocess"]["color"]
    int8 = read_contract((demo / "models" / "int8.tflite").read_bytes())
    assert int8.input.dtype == "int8" and int8.input.scale > 0 and int8.input.zero_point is not None


def test_round_trip_replaces_an_earlier_contract(fp32_model):
    data = fp32_model.read_bytes()
    c = read_contract(data)
    changed = c.replace(threshold=0.123, labels=("a", "b"))
    again = embed_contract(data, changed)
    assert read_contract(again).replace(integrity={}) == changed.replace(integrity={})
    assert read_contract(again).integrity != c.integrity  # new digests for the new contract
    assert again.count(b'"operating_point"') == 1  # the earlier contract's buffer is gone, not kept beside it


def test_model_without_contract_is_refused(fp32_model, tmp_path):
    from ai_edge_litert import schema_py_generated as schema
    import flatbuffers

    m = schema.ModelT.InitFromPackedBuf(bytearray(fp32_model.read_bytes()), 0)
    m.metadata = [x for x in m.metadata if x.name not in (b"medlite.contract", "medlite.contract")]
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    bare = tmp_path / "plain.tflite"
    bare.write_bytes(bytes(b.Output()))
    with pytest.raises(ModelError) as e:
        load(bare)
    assert str(bare) in str(e.value) and "has no medlite contract" in str(e.value)


def test_truncated_and_foreign_files_are_refused_before_the_runtime(fp32_model, tmp_path):
    data = fp32_model.read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated"):
        load(cut)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="not a TensorFlow Lite model"):
        load(junk)
    with pytest.raises(ModelError, match="no such model file"):
        load(tmp_path / "missing.tflite")


def test_invalid_contract_is_named():
    d = Contract(input=InputSpec(28, 28, 1), labels=("a", "b")).to_dict()
    d["input"]["channels"] = 2
    with pytest.raises(ModelError, match="input channels must be 1 or 3"):
        Contract.from_dict(d, "m.tflite")
    d = Contract(input=InputSpec(28, 28, 1), labels=("a", "b")).to_dict()
    del d["labels"]
    with pytest.raises(ModelError, match="malformed"):
        Contract.from_dict(d, "m.tflite")


def damaged_copies(data: bytes, n: int, seed: int = 0):
    """The damage benchmarks/damaged_models.py does: bit flips, overwritten chunks, truncations."""
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        damaged = importlib.import_module("damaged_models").damaged
    finally:
        sys.path.pop(0)
    rng = np.random.default_rng(seed)
    for k in range(n):
        yield k, damaged(data, k, rng)


def test_damaged_models_are_refused_or_answer_as_the_original(int8_model, data_dir, tmp_path, capsys):
    """150 damaged copies of a real int8 model through `medlite predict`: each is refused as corrupt (exit 3)
    before LiteRT sees it, or (damage the contract's JSON absorbs, such as whitespace) answers exactly as
    the original; the process survives all of them."""
    from medlite.cli import main

    images = [str(p) for p in sorted((data_dir / "images").glob("*.png"))[:2]]
    original = load(int8_model)
    expected = [original.predict(i).scores for i in images]
    refused = 0
    for k, blob in damaged_copies(int8_model.read_bytes(), 150):
        path, out = tmp_path / f"damaged{k}.tflite", tmp_path / f"damaged{k}.jsonl"
        path.write_bytes(blob)
        rc = main(["predict", str(path), *images, "--out", str(out), "-q", "--workers", "0"])
        err = capsys.readouterr().err
        if rc == 3:
            refused += 1
            assert str(path) in err and "unavailable" not in err
            assert any(w in err for w in ("damaged", "truncated", "corrupt", "not a TensorFlow Lite model")), err
        else:
            assert rc == 0, err
            assert [json.loads(line)["scores"] for line in out.read_text().splitlines()] == expected
    assert refused >= 145


def test_a_model_from_before_digests_loads_with_a_warning(int8_model, caplog):
    """An older medlite file: the contract without its integrity entry."""
    from medlite.convert.contract_writer import _pack

    old = _pack(int8_model.read_bytes(), read_contract(int8_model.read_bytes()).replace(integrity={}))
    with caplog.at_level("WARNING", logger="medlite"):
        model = load(old, backend="cpu")
    assert model.contract.integrity == {} and "without digests; it loads unverified" in caplog.text


@pytest.mark.parametrize("keep", [0.05, 0.2, 0.4, 0.6, 0.8, 0.95, 0.999, -150, -10, -1])
def test_truncation_anywhere_is_refused_as_truncated_before_the_runtime(int8_model, tmp_path, keep):
    """Cut at 10 offsets, the tail included (the last 150, 10 and 1 bytes): the error says truncated."""
    data = int8_model.read_bytes()
    n = int(len(data) * keep) if keep > 0 else len(data) + keep
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[:n])
    with pytest.raises(ModelError, match="truncated") as e:
        load(cut)
    assert str(cut) in str(e.value)
