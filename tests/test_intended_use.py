"""The patient inside the intended use: the paediatric chest model (PneumoniaMNIST: children of one to five)
rejects the shared adult chest DICOMs by their age, and answers the same images made 4 years old."""

import json

import pydicom
import pytest

from medlite.cli import main
from medlite.convert.contract_writer import embed_contract
from medlite.edge import Rejected, load, read_contract
from medlite.edge.contract import IntendedUse
from medlite.edge.dicom import patient_age_years
from medlite.train.pipeline import parse_age_range

CHEST = {"RG1_J2KI.dcm": 64, "nih_cxr14_dx_nofinding.dcm": 81}  # CR: by its birth and study dates; DX: PatientAge


def _with(src, dst, **tags):
    ds = pydicom.dcmread(src)
    for k, v in tags.items():
        if v is None:
            if k in ds:
                delattr(ds, k)
        else:
            setattr(ds, k, v)
    ds.save_as(dst)
    return dst


def test_the_demo_model_carries_the_age_range_of_its_training_data(int8_model):
    use = load(int8_model).contract.intended_use
    assert use.age_years == (1.0, 5.0) and use.if_age_missing == "reject"
    assert "patient age 1 to 5 years" in use.describe()


def test_adult_chest_dicoms_are_rejected_by_their_age_and_answered_at_4_years(int8_model, adult_dicom_dir, dicom_dir,
                                                                             tmp_path):
    out = tmp_path / "r.jsonl"
    files = [str(adult_dicom_dir / n) for n in CHEST] + [str(dicom_dir / n) for n in CHEST]
    assert main(["predict", str(int8_model), *files, "--out", str(out), "-q"]) == 0
    recs = {r["file"]: r for r in map(json.loads, out.read_text().splitlines())}
    for name, age in CHEST.items():
        adult, child = recs[str(adult_dicom_dir / name)], recs[str(dicom_dir / name)]
        assert adult == {"file": str(adult_dicom_dir / name), "status": "rejected",
                         "reason": f"patient age {age} years is outside this model's intended use (1 to 5 years)"}
        assert child["status"] == "ok" and "intended_use" not in child
    model = load(int8_model)
    with pytest.raises(Rejected, match="patient age 64 years is outside"):
        model.predict(adult_dicom_dir / "RG1_J2KI.dcm")
    assert model.predict(dicom_dir / "RG1_J2KI.dcm").label in model.contract.labels
    assert load(int8_model, ignore_intended_use=True).predict(adult_dicom_dir / "RG1_J2KI.dcm").intended_use_ignored


def test_a_dicom_without_an_age_is_rejected_or_answered_and_marked_as_the_contract_says(int8_model, adult_dicom_dir,
                                                                                      tmp_path):
    f = _with(adult_dicom_dir / "nih_cxr14_dx_nofinding.dcm", tmp_path / "noage.dcm", PatientAge=None,
              PatientBirthDate=None)
    cautious = load(int8_model)
    with pytest.raises(Rejected, match="gives no patient age .* cannot be checked .* \\(1 to 5 years\\)"):
        cautious.predict(f)
    blob = int8_model.read_bytes()
    c = read_contract(blob)
    answering = tmp_path / "answering.tflite"
    answering.write_bytes(embed_contract(blob, c.replace(intended_use=IntendedUse(
        c.intended_use.modalities, c.intended_use.body_parts, c.intended_use.description, (1.0, 5.0), "answer"))))
    out = tmp_path / "r.jsonl"
    assert main(["predict", str(answering), str(f), "--out", str(out), "-q"]) == 0
    (rec,) = map(json.loads, out.read_text().splitlines())
    assert rec["status"] == "ok" and rec["intended_use"] == "patient age not in the file, not checked"
    assert "answered and marked" in load(answering).contract.intended_use.describe()


@pytest.mark.parametrize("tags, years", [
    ({"PatientAge": "004Y"}, 4.0), ({"PatientAge": "018M"}, 1.5), ({"PatientAge": "026W"}, 26 * 7 / 365.25),
    ({}, 81.0),  # the shared DX's own PatientAge, a bare number
    ({"PatientAge": None, "PatientBirthDate": "20000826", "StudyDate": "20040826"}, 4.0),
    ({"PatientAge": "", "PatientBirthDate": "20000101", "StudyDate": None, "AcquisitionDate": "20030101"}, 3.0),
    ({"PatientAge": "", "PatientBirthDate": None}, None)])
def test_the_age_comes_from_patient_age_or_the_birth_and_study_dates(tags, years, adult_dicom_dir, tmp_path):
    f = _with(adult_dicom_dir / "nih_cxr14_dx_nofinding.dcm", tmp_path / "x.dcm", **tags)
    got = patient_age_years(pydicom.dcmread(f, stop_before_pixels=True))
    assert got is None if years is None else got == pytest.approx(years, abs=0.005)


def test_ages_read_as_a_person_says_them():
    use = IntendedUse(age_years=(0.0, 1.5))
    assert use.age_violation(2.0) == "patient age 2 years is outside this model's intended use (0 to 18 months)"
    assert use.age_violation(1.0) is None
    assert IntendedUse(age_years=(1, 5)).age_violation(0.5) == (
        "patient age 6 months is outside this model's intended use (1 to 5 years)")
    assert parse_age_range("1-5") == (1.0, 5.0) and parse_age_range("0m-18m") == (0.0, 1.5)
    with pytest.raises(ValueError, match="not MIN-MAX"):
        parse_age_range("adults")


def test_env_and_convert_md_show_the_age_rule(int8_model, demo, capsys):
    assert main(["env", "--model", str(int8_model), "--json"]) == 0
    assert "patient age 1 to 5 years" in capsys.readouterr().out
    assert "patient age 1 to 5 years" in (demo / "models" / "convert.md").read_text()


def test_train_takes_an_age_range_and_refuses_a_bad_one(tmp_path, data_dir, capsys):
    assert main(["train", "--data", "pneumoniamnist", "--data-dir", str(data_dir), "--out", str(tmp_path / "b"),
                 "--epochs", "1", "--age-range", "bad"]) == 2
    assert "--age-range" in capsys.readouterr().err


def test_view_positions_from_the_training_dicoms_or_the_recipe_reject_a_lateral_film(int8_model, dicom_dir,
                                                                                     tmp_path):
    from medlite.train.config import load_config
    from medlite.train.data import intended_use_of
    from medlite.train.pipeline import intended_use

    # Training DICOMs that all name their view give the rule; one without the tag leaves it out.
    assert intended_use_of({("CR", "CHEST", "PA"), ("DX", "CHEST", "AP")}, [3.0]).view_positions == ("AP", "PA")
    assert intended_use_of({("CR", "CHEST", "PA"), ("DX", "CHEST", None)}, [3.0]).view_positions == ()

    class Data:  # what pipeline.intended_use reads of the training data
        intended_use = IntendedUse(("CR",), ("CHEST",), "chest", (1.0, 5.0))

    frontal = intended_use(Data, load_config(family="small_cnn").updated(view_position="ap, pa"))
    assert frontal.view_positions == ("AP", "PA") and "view position AP, PA" in frontal.describe()
    # The demo model made frontal-only: the shared CR (a PA film, made 4 years old) is answered, its lateral copy
    # rejected with the view named.
    blob = int8_model.read_bytes()
    c = read_contract(blob)
    model = tmp_path / "frontal.tflite"
    model.write_bytes(embed_contract(blob, c.replace(intended_use=frontal)))
    lateral = _with(dicom_dir / "RG1_J2KI.dcm", tmp_path / "lateral.dcm", ViewPosition="LL")
    out = tmp_path / "r.jsonl"
    assert main(["predict", str(model), str(dicom_dir / "RG1_J2KI.dcm"), str(lateral), "--out", str(out), "-q"]) == 0
    recs = {r["file"]: r for r in map(json.loads, out.read_text().splitlines())}
    pa, ll = recs[str(dicom_dir / "RG1_J2KI.dcm")], recs[str(lateral)]
    assert pa["status"] == "ok"
    assert ll["status"] == "rejected" and ll["reason"] == (
        "view position LL is not among this model's intended inputs (AP, PA)")
