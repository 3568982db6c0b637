"""The command line, called in-process through main(argv)."""

import pytest

from medlite import __version__
from medlite.cli import build_parser, main

COMMANDS = ("demo", "pretrain", "train", "convert", "sign", "predict", "bench", "report", "select", "env")


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"medlite {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: medlite {command}" in out and "-q, --quiet" in out and "--verbose" in out


def test_train_help_documents_every_recipe_field(capsys):
    from medlite.train.config import TrainConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for f in TrainConfig.fields():
        if f.name not in ("model", "model_options"):
            assert "--" + f.name.replace("_", "-") in out


def test_missing_data_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDLITE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rc = main(["train", "--data", "nosuchmnist", "--out", str(tmp_path / "b"), "--epochs", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "medlite train: error:" in err and "nosuchmnist" in err and "Traceback" not in err


def test_mistyped_variant_gets_did_you_mean(bundle, tmp_path, capsys):
    rc = main(["convert", str(bundle), "--variants", "fp32,int9", "--out", str(tmp_path / "m")])
    assert rc == 2
    assert "did you mean 'int8'?" in capsys.readouterr().err


def test_unknown_command_exits_2():
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["deploy"])
    assert e.value.code == 2


@pytest.mark.parametrize("flags, problem", [(["--device", "firewire"], "is not one of usb"),
                                            (["--threads", "0"], "must be 1 or more"),
                                            (["--threads", "two"], "expected a whole number")])
def test_bad_option_values_are_usage_errors_without_traceback(flags, problem, capsys):
    with pytest.raises(SystemExit) as e:
        main(["predict", "m.tflite", "x.dcm", *flags])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert problem in err and "Traceback" not in err


def test_a_model_that_cannot_run_has_its_own_exit_code(tmp_path, capsys):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"\x18\x00\x00\x00TFL3" + b"\x00" * 40)
    (tmp_path / "x.png").write_bytes(b"")
    assert main(["predict", str(broken), str(tmp_path / "x.png")]) == 3
    err = capsys.readouterr().err
    assert str(broken) in err and "Traceback" not in err



@pytest.mark.parametrize("argv, option", [
    (["demo", "--epochs", "0"], "--epochs"), (["train", "--data", "x", "--out", "y", "--epochs", "ten"], "--epochs"),
    (["convert", "b", "--out", "o", "--io-type", "int4"], "--io-type"),
    (["predict", "m.tflite", "x.png", "--backend", "tpu"], "--backend"),
    (["bench", "m.tflite", "--data", "d", "--out", "o", "--threads", "-2"], "--threads"),
    (["report", "r.json"], "--out"), (["select", "r.json", "--max-auc-drop", "lots"], "--max-auc-drop"),
    (["env", "--json", "--colour"], "--colour")])
def test_every_command_reports_a_bad_option_in_one_line(argv, option, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and option in err and "Traceback" not in err, err


@pytest.mark.parametrize("argv, option, problem", [
    (["predict", "m.tflite", "x.png", "--out", "/nonexistent-folder/r.jsonl"], "--out", "does not exist"),
    (["predict", "m.tflite", "x.png", "--workers", "-3"], "--workers", "must be from 0 to 64, got -3"),
    (["serve", "m.tflite", "--out", "o", "--workers", "-1"], "--workers", "must be from 0 to 64"),
    (["serve", "m.tflite", "--out", "o", "--port", "70000"], "--port", "must be from 0 to 65535"),
    (["serve", "m.tflite", "--out", "o", "--frames", "first"], "--frames", "expected all, middle or a frame index"),
    (["predict", "m.tflite", "x.png", "--threads", "-1"], "--threads", "must be 1 or more"),
    (["bench", "m.tflite", "--data", "d", "--out", "o", "--runs", "0"], "--runs", "must be 1 or more")])
def test_an_unwritable_output_or_an_out_of_range_value_exits_2_before_any_work(argv, option, problem, capsys):
    """Checked by the parser, before a model is loaded: one line, no traceback."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and option in err and problem in err and "Traceback" not in err, err


def test_an_internal_error_has_its_own_exit_code_and_one_line(monkeypatch, capsys):
    """A bug in medlite (here: a command that raises an unexpected exception) is not 'some inputs failed':
    exit 4, one line that says to report it; the traceback only under --verbose."""
    from medlite.commands import env

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(env, "run", broken)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")  # --verbose sets it to 0 in this process: undone after
    assert main(["env"]) == 4
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "internal error (KeyError)" in err and "report" in err
    assert main(["env", "--verbose"]) == 4
    assert "Traceback" in capsys.readouterr().err


def test_a_reader_that_stops_early_ends_predict_quietly(int8_model, data_dir):
    """`medlite predict ... | head -1`: the pipe closes; predict stops with 141 (128 + SIGPIPE), no traceback and
    no internal error."""
    import os
    import subprocess
    import sys

    # 400 records, some 160 KB: more than a pipe holds, so predict is still writing when the reader goes.
    run = subprocess.Popen([sys.executable, "-m", "medlite", "predict", str(int8_model),
                            *[str(data_dir / "images")] * 100, "-q", "--workers", "0"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           cwd=os.path.dirname(os.path.abspath(__file__)))
    first = run.stdout.readline()
    run.stdout.close()
    err = run.stderr.read().decode()
    assert run.wait(timeout=60) == 141, err
    assert first.startswith(b'{"file": ') and "internal error" not in err and "Traceback" not in err
