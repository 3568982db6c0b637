"""A DICOM cut short in transit says it is truncated, and `--quiet` keeps decoders' own messages off the terminal:
real DICOMs of several transfer syntaxes cut at many offsets, through `medlite predict`."""

import json
import os
import subprocess
import sys

import pytest

from medlite.edge.truncation import truncation

from .test_serve import OUTSIDE

# (source, transfer syntax): uncompressed explicit and implicit little endian, big endian, JPEG baseline,
# JPEG 2000 (the chest CR and an ultrasound), RLE.
PYDICOM_FILES = ("CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "JPEG-lossy.dcm",
                 "examples_jpeg2k.dcm", "SC_rgb_rle.dcm")
SHARED_FILES = ("nih_cxr14_dx_nofinding.dcm", "RG1_J2KI.dcm", "US1_UNCR.dcm", "OBXXXX1A_rle.dcm")
CUTS = 12  # offsets per file, spread from just after the DICM marker to just before the end


def _sources(dicom_dir, pydicom_file):
    return [dicom_dir / n for n in SHARED_FILES] + [pydicom_file(n) for n in PYDICOM_FILES]


def test_every_whole_file_is_not_truncated(dicom_dir, pydicom_file):
    for src in _sources(dicom_dir, pydicom_file):
        assert truncation(str(src)) is None, src


def test_a_cut_inside_an_element_names_the_byte_the_element_and_its_length(dicom_dir, tmp_path):
    """The 5,000-byte head of the chest DX: the file ends inside its pixel data, whose declared length is a
    megabyte."""
    f = tmp_path / "head.dcm"
    f.write_bytes((dicom_dir / "nih_cxr14_dx_nofinding.dcm").read_bytes()[:5000])
    assert truncation(str(f)) == ("the file ends at byte 5000, inside element (7FE0,0010) of length 1048576: it is "
                                  "truncated (an interrupted copy or transfer?); send it again")


@pytest.fixture()
def cut_folder(dicom_dir, pydicom_file, tmp_path):
    folder = tmp_path / "cut"
    folder.mkdir()
    for src in _sources(dicom_dir, pydicom_file):
        src = str(src)
        data = open(src, "rb").read()
        for k in range(CUTS):
            at = 140 + (len(data) - 150) * k // (CUTS - 1)
            (folder / f"{src.rsplit('/', 1)[-1]}_{at}.dcm").write_bytes(data[:at])
    return folder


def test_medlite_predict_reports_each_cut_file_as_truncated_and_prints_nothing_under_quiet(int8_model, cut_folder,
                                                                                            tmp_path):
    out = tmp_path / "out.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    proc = subprocess.run([sys.executable, "-m", "medlite", "predict", str(int8_model), str(cut_folder), "-q",
                           "--ignore-intended-use", "--out", str(out)], capture_output=True, text=True,
                          cwd=OUTSIDE, timeout=600, env=env)
    assert proc.returncode == 1
    assert proc.stderr == "", proc.stderr[-2000:]  # no decoder's message, and medlite's own are quiet
    records = {r["file"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert len(records) == len(list(cut_folder.iterdir()))
    inside = 0
    for f, r in records.items():
        assert r["status"] == "error", (f, r)
        cut = truncation(f)
        if cut is not None:  # the file ends inside an element: exactly what the walker found
            inside += 1
            assert r["error"] == cut and f"byte {(cut_folder / f).stat().st_size}" in cut
        else:  # the cut fell between two elements: a shorter, well-formed file that stops before its pixels
            assert "truncated" in r["error"], (f, r["error"])
    assert inside >= 0.8 * len(records)
