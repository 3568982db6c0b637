"""`medlite predict --engine ray` on a real local Ray cluster (2 CPUs, one per test session): the same records as
a local run, file by file and in the same order, bad files included; an actor killed mid-job costs no record."""

import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pydicom
import pytest

from medlite.cli import main

from .test_serve import OUTSIDE

ray = pytest.importorskip("ray", reason="Ray is an extra: pip install 'medlite[ray]'")


@pytest.fixture(scope="module")
def cluster():
    """A local cluster of 2 CPUs, which `medlite predict --engine ray` joins (and leaves running)."""
    started = not ray.is_initialized()
    if started:
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        # Ray's workers start in the driver's folder, and Python puts it first on their path: never the checkout's
        # root, whose source folder medlite/ is not the installed package (see test_no_tensorflow).
        here = os.getcwd()
        os.chdir(OUTSIDE)
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        finally:
            os.chdir(here)
    yield
    if started:
        ray.shutdown()


def _strip(records: list[dict]) -> list[dict]:
    """Records without the interpreter call's time, the one field two runs never share."""
    return [{k: v for k, v in r.items() if k != "latency_ms"} for r in records]


def _predict(model, paths, out, *extra) -> list[dict]:
    rc = main(["predict", str(model), *map(str, paths), "--out", str(out), "-q", *extra])
    assert rc in (0, 1), rc
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.fixture(scope="module")
def archive(dicom_dir, adult_dicom_dir, data_dir, pydicom_file, tmp_path_factory):
    """Real files of every outcome: children's chest films (answered), adults' and ultrasound (rejected), PNGs,
    a DICOM cut short, a file that is no image, a cine; and a name that matches nothing."""
    folder = tmp_path_factory.mktemp("archive")
    for f in sorted(dicom_dir.iterdir()):
        shutil.copy(f, folder / f"child_{f.name}")
    for f in sorted(adult_dicom_dir.iterdir()):
        shutil.copy(f, folder / f"adult_{f.name}")
    for f in sorted((data_dir / "images").iterdir())[:4]:
        shutil.copy(f, folder / f.name)
    (folder / "cut.dcm").write_bytes((adult_dicom_dir / "RG1_J2KI.dcm").read_bytes()[:6000])
    (folder / "notes.png").write_text("not an image")
    shutil.copy(pydicom_file("examples_ybr_color.dcm"), folder / "cine.dcm")
    return folder


def test_ray_gives_the_local_run_s_records_file_by_file(cluster, int8_model, archive, tmp_path):
    paths = [archive, tmp_path / "missing.dcm"]
    local = _predict(int8_model, paths, tmp_path / "local.jsonl")
    on_ray = _predict(int8_model, paths, tmp_path / "ray.jsonl", "--engine", "ray", "--actors", "2")
    assert _strip(on_ray) == _strip(local)
    assert {r["status"] for r in local} == {"ok", "rejected", "error"}
    # A cine's every frame, the intended use ignored: several records of one file, in frame order.
    extra = ("--frames", "all", "--ignore-intended-use")
    local = _predict(int8_model, [archive], tmp_path / "local-all.jsonl", *extra)
    on_ray = _predict(int8_model, [archive], tmp_path / "ray-all.jsonl", *extra, "--engine", "ray")
    assert _strip(on_ray) == _strip(local)
    assert sum(r["file"].endswith("cine.dcm") for r in on_ray) == pydicom.dcmread(
        archive / "cine.dcm", stop_before_pixels=True).NumberOfFrames


def test_an_actor_killed_mid_job_costs_no_record(cluster, int8_model, dicom_dir, tmp_path, capsys):
    """Records on standard output: Ray's message about the dead actor goes to standard error, never among them."""
    folder = tmp_path / "films"
    folder.mkdir()
    for i in range(240):
        shutil.copy(dicom_dir / "nih_cxr14_dx_nofinding.dcm", folder / f"dx{i:03d}.dcm")
    killed, done = [], threading.Event()

    def kill_an_actor():
        time.sleep(3)  # the actors have started and scored some files by now
        deadline = time.time() + 120
        while time.time() < deadline and not killed and not done.is_set():
            pids = subprocess.run(["pgrep", "-f", "MapBatches"], capture_output=True, text=True).stdout.split()
            if pids:
                os.kill(int(pids[0]), signal.SIGKILL)
                killed.append(int(pids[0]))
            time.sleep(0.1)

    killer = threading.Thread(target=kill_an_actor)
    killer.start()
    try:
        assert main(["predict", str(int8_model), str(folder), "-q", "--engine", "ray", "--actors", "2"]) == 0
    finally:
        done.set()
        killer.join()
    assert killed, "no actor was killed while the job ran"
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in records] == sorted(str(p) for p in folder.iterdir())
    assert {r["status"] for r in records} == {"ok"} and len({r["score"] for r in records}) == 1


def test_sigterm_stops_a_ray_run_with_every_line_whole(int8_model, dicom_dir, tmp_path):
    """SIGTERM (and Ctrl-C alike) stops the job as a local run stops: every line written is whole, a last line
    says how far it got, exit 143; Ray's own handler, which would end the process at once, is not left in place."""
    import sys

    folder = tmp_path / "films"
    folder.mkdir()
    for i in range(400):
        shutil.copy(dicom_dir / "nih_cxr14_dx_nofinding.dcm", folder / f"dx{i:03d}.dcm")
    out = tmp_path / "r.jsonl"
    run = subprocess.Popen([sys.executable, "-m", "medlite", "predict", str(int8_model), str(folder), "--out", str(out),
                            "-q", "--engine", "ray"], cwd=OUTSIDE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 10):
        time.sleep(0.2)
    run.send_signal(signal.SIGTERM)
    err = run.communicate(timeout=60)[1]
    text = out.read_text()
    assert run.returncode == 143, err
    assert text.endswith("\n") and all(json.loads(line)["status"] == "ok" for line in text.splitlines())
    n = len(text.splitlines())
    assert 10 <= n < 400 and f"stopped after {n} of 400 file(s)" in err


def test_ray_options_that_do_not_fit_are_usage_errors(int8_model, tmp_path, capsys):
    assert main(["predict", str(int8_model), str(tmp_path), "--engine", "ray", "--heatmap", str(tmp_path)]) == 2
    assert "--heatmap and --overlay" in capsys.readouterr().err
    assert main(["predict", str(int8_model), str(tmp_path), "--actors", "2"]) == 2
    assert "--address and --actors are for --engine ray" in capsys.readouterr().err


def test_the_accuracy_report_on_ray_equals_the_local_bench_s(cluster, int8_model, fp32_model, data_dir, tmp_path):
    models = [str(fp32_model), str(int8_model)]
    common = ["--data", "pneumoniamnist", "--data-dir", str(data_dir), "-q"]
    assert main(["bench", *models, *common, "--backend", "cpu", "--out", str(tmp_path / "local")]) == 0
    assert main(["bench", *models, *common, "--engine", "ray", "--accuracy-only", "--actors", "2",
                 "--out", str(tmp_path / "ray")]) == 0
    local, on_ray = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("local", "ray"))
    assert on_ray["accuracy_only"] and on_ray["dataset"] == local["dataset"]
    assert [(r["variant"], r["metrics"]) for r in on_ray["rows"]] == [(r["variant"], r["metrics"])
                                                                     for r in local["rows"]]
    assert all("latency_ms" not in r for r in on_ray["rows"])
    assert "| int8 | cpu |" in (tmp_path / "ray" / "report.md").read_text()
    # What compares latency refuses a report that has none.
    assert main(["select", str(tmp_path / "ray" / "report.json")]) == 2
