"""Shared fixtures: the real data beside the checkout, and one real demo run whose models other tests use."""

import os
from pathlib import Path

import pydicom
import pytest

# Tests never download: a missing data set must fail with the offline error, not reach the network.
os.environ["MEDLITE_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parent.parent

# Fixtures that train or convert real models: a test using one is `slow`, so `pytest -m "not slow"` is the
# fast lane of pure-logic tests. Every test still runs in `make test`.
SLOW_FIXTURES = {"demo", "int8_model", "fp32_model", "bundle", "bench_report", "tiny_bundle", "all_variants",
                 "real_scores", "busi_models"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def shared_data() -> Path:
    return Path(os.environ.get("MEDLITE_DATA_DIR") or ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = shared_data()
    if not (d / "pneumoniamnist.npz").exists():
        pytest.skip(f"real data not found in {d}; set MEDLITE_DATA_DIR to the shared data folder")
    return d


@pytest.fixture(scope="session")
def adult_dicom_dir(data_dir) -> Path:
    """The shared DICOMs as they are: the two chest X-rays are of adults (64 and 81 years)."""
    return data_dir / "dicom"


@pytest.fixture(scope="session")
def dicom_dir(adult_dicom_dir, tmp_path_factory) -> Path:
    """The shared DICOMs with the chest X-rays' patients made 4 years old (PatientAge, and a birth date four years
    before the study), so that the paediatric demo model answers them; the ultrasound files as they are."""
    out = tmp_path_factory.mktemp("dicom")
    for f in sorted(adult_dicom_dir.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        if ds.Modality in ("CR", "DX"):
            ds.PatientAge = "004Y"
            if ds.get("PatientBirthDate") and ds.get("StudyDate"):
                ds.PatientBirthDate = f"{int(ds.StudyDate[:4]) - 4:04d}{ds.StudyDate[4:]}"
        ds.save_as(out / f.name)
    return out


@pytest.fixture(scope="session")
def demo(tmp_path_factory, data_dir):
    """`medlite demo` end to end on the real data, with few epochs: bundle, fp32 and int8 models, report."""
    from medlite.cli import main

    out = tmp_path_factory.mktemp("demo")
    # 5 epochs: after 3 the features of a model trained on an AVX2 machine (numerics differ from AVX-512's) left
    # the guard flagging 69% of BUSI; after 5, 97% (the full demo's model: 95%).
    rc = main(["demo", "--data-dir", str(data_dir), "--out", str(out), "--epochs", "5", "--runs", "50",
               "--variants", "fp32,int8"])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def int8_model(demo) -> Path:
    return demo / "models" / "int8.tflite"


@pytest.fixture(scope="session")
def fp32_model(demo) -> Path:
    return demo / "models" / "fp32.tflite"


@pytest.fixture(scope="session")
def bundle(demo) -> Path:
    return demo / "bundle"


def _pydicom_file(name: str) -> str:
    from pydicom.data import get_testdata_file

    return get_testdata_file(name, download=False)


@pytest.fixture(scope="session")
def pydicom_file():
    """The path of one of pydicom's own test files (real DICOMs shipped inside the package)."""
    return _pydicom_file
