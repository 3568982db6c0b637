"""Signed models: a cart run with --trust runs only a model signed by a key it trusts, and refuses, with exit 3 and
nothing scored, an unsigned one, one signed by another key, one altered after signing and one whose signature
was altered; records and reports name the key that signed."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from medlite.cli import main
from medlite.edge import load
from medlite.edge.signature import Untrusted, public_key, signature_path

from .test_serve import OUTSIDE, free_port, objects_at, send, start_node, texts_and_codes, wait_for


def _key_pair(folder: Path, name: str, key=None) -> tuple[Path, Path]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two key pairs: A, whom the cart trusts, and B, whom it does not."""
    folder = tmp_path_factory.mktemp("keys")
    return {"A": _key_pair(folder, "a"), "B": _key_pair(folder, "b")}


@pytest.fixture
def signed(int8_model, keys, tmp_path) -> Path:
    """A copy of the demo's int8 model, signed with A by `medlite sign`."""
    model = tmp_path / "int8.tflite"
    shutil.copy(int8_model, model)
    assert main(["sign", str(model), "--key", str(keys["A"][0]), "-q"]) == 0
    return model


def _child_chest(dicom_dir) -> list[str]:
    return [str(dicom_dir / n) for n in ("RG1_J2KI.dcm", "nih_cxr14_dx_nofinding.dcm")]  # made 4 years old


def test_a_model_signed_by_a_trusted_key_runs_and_its_records_name_the_key(signed, keys, dicom_dir, tmp_path,
                                                                            capsys):
    fingerprint = public_key(keys["A"][1]).fingerprint
    out = tmp_path / "r.jsonl"
    assert main(["predict", str(signed), *_child_chest(dicom_dir), "--trust", str(keys["B"][1]), "--trust",
                 str(keys["A"][1]), "--out", str(out), "-q"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert {r["signed_by"] for r in records} == {fingerprint}
    model = load(signed, trust=[keys["A"][1]])
    assert model.signed_by == fingerprint and model.predict(_child_chest(dicom_dir)[0]).signed_by == fingerprint
    # Without --trust nothing is checked and records stay as they were; env says the model is signed, and by whom.
    assert "signed_by" not in load(signed).predict(_child_chest(dicom_dir)[0]).record()
    capsys.readouterr()
    assert main(["env", "--model", str(signed), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["signature"].startswith(f"signed by key {fingerprint} (not")
    # model-signing's own command line verifies medlite's signature.
    r = subprocess.run([str(Path(sys.executable).with_name("model_signing")), "verify", "key", str(signed),
                        "--signature", str(signature_path(signed)), "--public_key", str(keys["A"][1])],
                       capture_output=True, text=True)
    assert "Verification succeeded" in r.stdout + r.stderr


def _unsigned(model: Path, keys):
    signature_path(model).unlink()


def _other_key(model: Path, keys):
    assert main(["sign", str(model), "--key", str(keys["B"][0]), "-q"]) == 0


def _one_byte(model: Path, keys):
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the weights: the contract's digest would catch it too, but later
    model.write_bytes(bytes(data))


def _signature_bytes(model: Path, keys):
    """A's genuine signature of another statement (a copy under another name) put in this model's envelope."""
    other = model.with_name("other.tflite")
    shutil.copy(model, other)
    assert main(["sign", str(other), "--key", str(keys["A"][0]), "-q"]) == 0
    sig = json.loads(signature_path(model).read_text())
    sig["dsseEnvelope"]["signatures"] = json.loads(signature_path(other).read_text())["dsseEnvelope"]["signatures"]
    signature_path(model).write_text(json.dumps(sig))


CASES = {"unsigned": (_unsigned, "is not signed"), "unknown key": (_other_key, "which this run does not trust"),
         "altered": (_one_byte, "was altered after it was signed by trusted key"),
         "bad signature": (_signature_bytes, "does not verify with it")}


@pytest.mark.parametrize("case", CASES)
def test_an_untrusted_model_is_refused_before_it_is_read_and_nothing_is_scored(case, signed, keys, dicom_dir,
                                                                              data_dir, tmp_path, capsys):
    spoil, reason = CASES[case]
    spoil(signed, keys)
    trust = ["--trust", str(keys["A"][1])]
    out = tmp_path / "r.jsonl"
    capsys.readouterr()
    assert main(["predict", str(signed), *_child_chest(dicom_dir), *trust, "--out", str(out), "-q"]) == 3
    assert not out.exists() or out.read_text() == ""
    assert reason in capsys.readouterr().err
    with pytest.raises(Untrusted, match=reason) as refused:
        load(signed, trust=[keys["A"][1]])
    assert refused.value.case == case
    # bench checks every model before it runs any, and writes no report.
    assert main(["bench", str(signed), "--data", "pneumoniamnist", "--data-dir", str(data_dir),
                 *trust, "--out", str(tmp_path / "bench"), "-q"]) == 3
    assert not (tmp_path / "bench").exists()


def test_the_trust_setting_of_the_cart_applies_when_no_flag_is_given(signed, keys, dicom_dir, tmp_path,
                                                                     monkeypatch, capsys):
    monkeypatch.setenv("MEDLITE_TRUST", str(keys["B"][1]))
    assert main(["predict", str(signed), *_child_chest(dicom_dir), "--out", str(tmp_path / "r.jsonl"), "-q"]) == 3
    assert "which this run does not trust" in capsys.readouterr().err
    monkeypatch.setenv("MEDLITE_TRUST", f"{keys['B'][1]}:{keys['A'][1]}")
    assert main(["predict", str(signed), *_child_chest(dicom_dir), "--out", str(tmp_path / "r.jsonl"), "-q"]) == 0
    monkeypatch.setenv("MEDLITE_TRUST", str(tmp_path / "missing.pub"))
    assert main(["predict", str(signed), *_child_chest(dicom_dir), "-q"]) == 2
    assert "$MEDLITE_TRUST" in capsys.readouterr().err


def test_keys_that_cannot_sign_or_be_trusted_are_usage_errors(signed, keys, tmp_path, capsys):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.pem").write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    locked = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw"))
    (tmp_path / "locked.pem").write_bytes(locked)
    for argv, problem in (
            (["sign", str(signed), "--key", str(tmp_path / "rsa.pem")], "not an elliptic-curve key"),
            (["sign", str(signed), "--key", str(tmp_path / "locked.pem")], "protected by a password"),
            (["sign", str(signed), "--key", str(tmp_path / "missing.pem")], "No such file"),
            (["convert", "bundle", "--out", "m", "--sign-key", str(keys["A"][1])], "not a PEM private key"),
            (["predict", str(signed), str(signed), "--trust", str(keys["A"][0])], "give the cart the public one")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert problem in err and len(err.strip().splitlines()) == 1, err


def test_the_node_runs_only_a_trusted_model_and_its_reports_name_the_key(signed, keys, dicom_dir, tmp_path):
    fingerprint = public_key(keys["A"][1]).fingerprint
    image = Path(_child_chest(dicom_dir)[1])
    uid = str(pydicom.dcmread(image, stop_before_pixels=True).SOPInstanceUID)
    port, out = free_port(), tmp_path / "node"
    node = start_node(signed, out, port, "--trust", str(keys["A"][1]), "--no-heatmap")
    try:
        assert send([image], port) == {uid: 0}
        wait_for(lambda: objects_at(out / "reports", "SR"))
    finally:
        node.stop()
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["signed_by"] == fingerprint
    (report,) = [pydicom.dcmread(f) for f in objects_at(out / "reports", "SR")]
    assert f"signed by key {fingerprint}" in texts_and_codes(report)  # a TID 4019 Algorithm Parameters item
    # Trusting B only, the node does not start: exit 3 before it listens.
    r = subprocess.run([sys.executable, "-m", "medlite", "serve", str(signed), "--out", str(tmp_path / "n2"),
                        "--port", str(free_port()), "--trust", str(keys["B"][1])], capture_output=True, text=True,
                       cwd=OUTSIDE, timeout=120)
    assert r.returncode == 3 and "which this run does not trust" in r.stderr
