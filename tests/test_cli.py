"""The command line, called in-process through main(argv)."""

import pytest

from medlite import __version__
from medlite.cli import build_parser, main

COMMANDS = ("demo", "train", "convert", "predict", "bench", "report", "select", "env")


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
                                            (["--threads", "0"], "must be at least 1"),
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
