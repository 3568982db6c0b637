"""The runtime: backend chain and fallback reasons, results, thread safety, and `medlite predict`."""

import dataclasses
import json
import shutil
import threading

import numpy as np
import pytest

from medlite.cli import main
from medlite.edge import BackendUnavailable, Options, Rejected, load, read_contract
from medlite.edge.backends import edgetpu, gpu
from medlite.edge.scores import dequantize, softmax


def test_auto_records_why_each_better_backend_was_passed_over(int8_model):
    """What the hardware present makes true: with a GPU the GPU ran it, without one the CPU, and why."""
    model = load(int8_model)
    gpu_ok, why = gpu.is_available(Options(path=str(int8_model)))
    assert model.backend == ("gpu" if gpu_ok else "cpu")
    reasons = {a.backend: a for a in model.attempts}
    assert list(reasons) == (["edgetpu", "gpu"] if gpu_ok else ["edgetpu", "gpu", "cpu"])
    assert "not compiled for the Edge TPU" in reasons["edgetpu"].reason
    assert reasons["gpu"].ok == gpu_ok and (gpu_ok or reasons["gpu"].reason == why)


def test_named_backend_that_cannot_run_raises_with_its_reason(int8_model):
    ok, why = gpu.is_available(Options(path=str(int8_model)))
    if ok:
        pytest.skip("a GPU is available here")
    with pytest.raises(BackendUnavailable) as e:
        load(int8_model, backend="gpu")
    assert e.value.reason == why


def edgetpu_build(plain: bytes) -> bytes:
    """The plain model with one operator turned into edgetpu_compiler's custom op, as in a real build, sealed
    with the plain model's contract as `medlite convert` seals a compiled build."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from medlite.convert.contract_writer import embed_contract

    m = schema.ModelT.InitFromPackedBuf(bytearray(plain), 0)
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode, code.version = "edgetpu-custom-op", 1
    m.operatorCodes.append(code)
    m.subgraphs[0].operators[0].opcodeIndex = len(m.operatorCodes) - 1
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return embed_contract(bytes(b.Output()), read_contract(plain))


def test_edgetpu_build_falls_back_to_the_plain_model_beside_it(int8_model, tmp_path):
    """Through the real delegate loading path: without libedgetpu the CPU runs the plain int8 file."""
    from medlite.edge.tflite_file import custom_ops

    shutil.copy(int8_model, tmp_path / "m.tflite")
    build = edgetpu_build(int8_model.read_bytes())
    assert custom_ops(build) == ["edgetpu-custom-op"] and custom_ops(int8_model.read_bytes()) == []
    (tmp_path / "m_edgetpu.tflite").write_bytes(build)
    ok, why = edgetpu.is_available(Options())
    if ok:
        pytest.skip("an Edge TPU is present")
    model = load(tmp_path / "m_edgetpu.tflite")
    assert model.backend in ("gpu", "cpu") and model.path == str(tmp_path / "m.tflite")
    first = model.attempts[0]
    assert first.backend == "edgetpu" and not first.ok and first.reason == why
    with pytest.raises(BackendUnavailable):
        load(tmp_path / "m_edgetpu.tflite", backend="edgetpu")
    (tmp_path / "m.tflite").unlink()
    with pytest.raises(BackendUnavailable, match="edgetpu-custom-op.*needs the plain model"):
        load(tmp_path / "m_edgetpu.tflite", backend="cpu")


def test_edgetpu_plugin_chooses_the_build_beside_a_plain_model(int8_model, tmp_path):
    """Given the plain file, the Edge TPU plug-in looks for its build; without one it says so before the delegate."""
    plain = tmp_path / "m.tflite"
    shutil.copy(int8_model, plain)
    data = plain.read_bytes()
    with pytest.raises(RuntimeError, match="not compiled for the Edge TPU .*m_edgetpu.tflite"):
        edgetpu.open(data, Options(path=str(plain)))
    with pytest.raises(RuntimeError, match="not compiled for the Edge TPU"):
        edgetpu.open(data, Options())  # bytes alone, no file to look beside
    (tmp_path / "m_edgetpu.tflite").write_bytes(edgetpu_build(data))
    assert edgetpu._build_for(data, Options(path=str(plain))) == (tmp_path / "m_edgetpu.tflite").read_bytes()
    damaged = bytearray((tmp_path / "m_edgetpu.tflite").read_bytes())
    damaged[len(damaged) // 3] ^= 0x10
    (tmp_path / "m_edgetpu.tflite").write_bytes(bytes(damaged))
    with pytest.raises(RuntimeError, match="m_edgetpu.tflite: the model's weights do not match its contract"):
        edgetpu._build_for(data, Options(path=str(plain)))


def test_load_takes_bytes_and_gives_the_same_answer_as_the_file(int8_model, data_dir):
    img = sorted((data_dir / "images").glob("*.png"))[0]
    from_file, from_bytes = load(int8_model, backend="cpu"), load(int8_model.read_bytes(), backend="cpu")
    assert from_bytes.path is None and from_bytes.sha256 == from_file.sha256
    assert from_bytes.predict(img).scores == from_file.predict(img).scores


def test_device_syntax_is_checked(int8_model):
    for good in ("usb", "usb:0", "pci:1", ":0"):
        assert Options(device=good).device == good
    with pytest.raises(ValueError, match="usb, usb:N"):
        load(int8_model, device="firewire")


@pytest.mark.gpu
def test_gpu_runs_the_model_like_the_cpu(fp32_model, data_dir):
    ok, why = gpu.is_available(Options(path=str(fp32_model)))
    if not ok:
        pytest.skip(f"GPU backend unavailable: {why}")
    img = sorted((data_dir / "images").glob("*.png"))[0]
    assert load(fp32_model, backend="gpu").predict(img).scores == pytest.approx(
        load(fp32_model, backend="cpu").predict(img).scores, abs=1e-3)


@pytest.mark.edgetpu
def test_an_edgetpu_without_a_build_of_the_model_says_so(int8_model):
    """With an Edge TPU present (its delegate loads), a plain model has no build to run: the reason says so."""
    ok, why = edgetpu.is_available(Options())
    if not ok:
        pytest.skip(f"Edge TPU backend unavailable: {why}")
    with pytest.raises(BackendUnavailable, match="not compiled for the Edge TPU"):
        load(int8_model, backend="edgetpu")


def test_prediction_record(int8_model, data_dir):
    model = load(int8_model)
    p = model.predict(sorted((data_dir / "images").glob("*.png"))[0])
    assert set(p.scores) == {"normal", "pneumonia"} and sum(p.scores.values()) == pytest.approx(1, abs=0.02)
    assert p.positive == (p.scores["pneumonia"] >= p.threshold)
    assert p.label == ("pneumonia" if p.positive else "normal")
    assert p.backend == model.backend and p.latency_ms > 0 and p.model_sha256 == model.sha256
    with pytest.raises(AttributeError):  # frozen
        p.label = "x"
    json.dumps(p.record())


def test_training_and_cart_preprocessing_agree_on_decoded_files(fp32_model, data_dir, dicom_dir, tmp_path):
    """Real files (1024 px PNGs, a 1955 px MONOCHROME1 JPEG 2000 CR, a DX) read as training reads a class
    folder, and read by the cart runtime with that training's contract: the same model input, to the bit."""
    from medlite.convert.contract_writer import embed_contract
    from medlite.train.data import load_training_data

    pngs = sorted((data_dir / "images").glob("*.png"))
    layout = {"train/a": [pngs[0], pngs[1], dicom_dir / "RG1_J2KI.dcm"],
              "train/b": [pngs[2], dicom_dir / "nih_cxr14_dx_nofinding.dcm"], "val/a": [pngs[3]], "val/b": [pngs[3]]}
    for folder, files in layout.items():
        (tmp_path / folder).mkdir(parents=True)
        for f in files:
            shutil.copy(f, tmp_path / folder / f.name)
    data = load_training_data(str(tmp_path), image_size=28, color="grey")
    assert data.splits["train"].x.shape == (5, 28, 28, 1) and not data.skipped
    fp32 = fp32_model.read_bytes()
    contract = read_contract(fp32).replace(input=data.spec, preprocess=data.preprocess)
    model = load(embed_contract(fp32, contract), backend="cpu", ignore_intended_use=True)
    cart = [model.prepare(frame)[0] for folder in ("train/a", "train/b")
            for f in sorted((tmp_path / folder).iterdir()) for frame in model.frames(f)]
    np.testing.assert_array_equal(np.stack(cart), data.splits["train"].x)


def test_shared_model_is_thread_safe(int8_model, dicom_dir, data_dir):
    model = load(int8_model, ignore_intended_use=True)  # the ultrasound files too: here only inputs to decode
    files = sorted(dicom_dir.glob("*.dcm")) + sorted((data_dir / "images").glob("*.png"))
    expected = {str(f): model.predict(f).scores for f in files}
    got, errors = {}, []

    def work():
        try:
            for _ in range(5):
                for f in files:
                    got.setdefault(str(f), []).append(model.predict(f).scores)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for f, scores in got.items():
        assert len(scores) == 20 and all(s == expected[f] for s in scores)


def _real_inputs(model, data_dir, n=40):
    from medlite.measure import datasets
    from medlite.measure.bench import frame_of

    images = datasets.load("pneumoniamnist", data_dir).splits["test"].images[:n]
    return [model.prepare(frame_of(img)) for img in images]


def test_cpu_session_copies_what_a_separate_interpreter_gives(int8_model, data_dir):
    """The CPU session's outputs equal a separate LiteRT interpreter's, call after call; outputs a caller
    keeps do not change with the next call; a wrong input is refused with the model's input named."""
    from ai_edge_litert.interpreter import Interpreter

    model = load(int8_model, backend="cpu")
    session = model.session
    raw = Interpreter(model_path=str(int8_model))
    raw.allocate_tensors()
    outs = [o["index"] for o in raw.get_output_details()]
    xs = _real_inputs(model, data_dir, 10)
    kept = session.run(xs[0])
    for x in xs:
        got = session.run(x)
        raw.set_tensor(raw.get_input_details()[0]["index"], x)
        raw.invoke()
        for o, i in zip(got, outs):
            assert np.array_equal(o, raw.get_tensor(i))
    assert session.run(xs[1], wanted=(0,))[1:] == [None] * (len(outs) - 1)
    raw.set_tensor(raw.get_input_details()[0]["index"], xs[0])
    raw.invoke()
    assert np.array_equal(kept[0], raw.get_tensor(outs[0]))
    for bad in (xs[0].astype(np.float32), xs[0][0], xs[0][:, :, :-1]):
        with pytest.raises(ValueError, match=r"the model takes \(1, 28, 28, 1\) int8"):
            session.run(bad)


# slow by hand: conftest marks tests by the fixtures they name, and this one asks for its model by value
@pytest.mark.slow
@pytest.mark.parametrize("which", ["int8_model", "fp32_model"])
def test_classify_gives_what_a_raw_interpreter_gives(which, request, data_dir):
    """The one inference path against a separate raw LiteRT interpreter on real inputs: the scores are its
    output dequantized (and the contract's softmax applied in float), bit for bit; the decision is ``decide``'s,
    the guard's score is the model's own output."""
    from ai_edge_litert.interpreter import Interpreter

    from medlite.edge import decide

    path = request.getfixturevalue(which)
    model = load(path, backend="cpu")
    c = model.contract
    raw = Interpreter(model_path=str(path))
    raw.allocate_tensors()
    outs = raw.get_output_details()
    for x in _real_inputs(model, data_dir):
        raw.set_tensor(raw.get_input_details()[0]["index"], x)
        raw.invoke()
        scores_out = outs[c.scores_output]
        scale, zero = scores_out["quantization"]
        scores = dequantize(raw.get_tensor(scores_out["index"]), (scale, zero) if scale else None).tolist()
        scores = softmax(scores) if c.activation == "softmax" else scores
        p = model.classify(x)
        assert list(p.scores.values()) == scores and p.label == c.labels[int(decide(scores, c))]
        assert p.ood_score == float(raw.get_tensor(outs[c.ood["output"]]["index"]).reshape(-1)[0])
        assert p.in_distribution == (p.ood_score <= c.ood["threshold"])


def test_each_value_of_a_prediction_is_under_its_own_name(int8_model, dicom_dir):
    """On a real DICOM (file, frame and SOP Instance UID set), every field of the Prediction equals the one
    of a Prediction built by name from the session's own outputs; equality leaves the arrays out, and the
    record carries the same values."""
    from medlite.edge import Prediction, decide

    model = load(int8_model, backend="cpu")
    (frame,) = model.frames(dicom_dir / "nih_cxr14_dx_nofinding.dcm")
    frame = dataclasses.replace(frame, frame=3)  # as a cine's frame: every field of the frame set
    x = model.prepare(frame)
    got = model.predict_frame(frame, x=x)
    c = model.contract
    outputs = model.session.run(x)
    scores = softmax(dequantize(outputs[c.scores_output], model.session.outputs[c.scores_output].quant).tolist())
    guard = float(outputs[c.ood["output"]].reshape(-1)[0])
    label = int(decide(scores, c))
    expected = Prediction(label=c.labels[label], scores=dict(zip(c.labels, scores)),
                          positive=label == c.positive_index, score=scores[c.positive_index],
                          threshold=c.threshold, backend="cpu", latency_ms=got.latency_ms, model_sha256=model.sha256,
                          file=frame.file, frame=frame.frame, sop_instance_uid=frame.sop_instance_uid,
                          intended_use_ignored=False, in_distribution=guard <= c.ood["threshold"], ood_score=guard)
    assert frame.file and frame.sop_instance_uid
    for field in dataclasses.fields(Prediction):
        if field.compare:
            assert getattr(got, field.name) == getattr(expected, field.name), field.name
    assert got == expected and not got != expected
    assert dataclasses.replace(got, heatmap=np.zeros((2, 2), np.uint8)) == expected  # arrays are not compared
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.label = "normal"
    assert got.record()["sop_instance_uid"] == frame.sop_instance_uid and got.record()["file"] == frame.file


def test_predict_cli_folder_with_bad_files(int8_model, dicom_dir, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for f in dicom_dir.glob("*.dcm"):
        shutil.copy(f, folder / f.name)
    (folder / "broken.dcm").write_bytes((dicom_dir / "RG1_J2KI.dcm").read_bytes()[:5000])
    (folder / "notes.png").write_bytes(b"not a png")
    out = tmp_path / "out.jsonl"
    rc = main(["predict", str(int8_model), str(folder), str(tmp_path / "nothing*.dcm"), "--out", str(out)])
    assert rc == 1
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 7
    ok = [r for r in recs if r["status"] == "ok"]
    bad = {r["file"].rsplit("/", 1)[-1]: r["error"] for r in recs if r["status"] == "error"}
    rejected = {r["file"].rsplit("/", 1)[-1] for r in recs if r["status"] == "rejected"}
    assert len(ok) == 2 and set(bad) == {"broken.dcm", "notes.png", "nothing*.dcm"}
    assert rejected == {"US1_UNCR.dcm", "OBXXXX1A_rle.dcm"}
    assert "matched no files" in bad["nothing*.dcm"] and "not a readable image" in bad["notes.png"]
    for r in ok:
        for key in ("file", "label", "scores", "positive", "backend", "latency_ms", "model_sha256",
                    "in_distribution", "ood_score"):
            assert key in r
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "2 result(s)" in err and "2 rejected (outside the intended use); 3 failure(s)" in err


def test_predict_cli_cine_frames_and_exit_codes(int8_model, tmp_path, pydicom_file):
    out = tmp_path / "cine.jsonl"
    assert main(["predict", str(int8_model), pydicom_file("examples_ybr_color.dcm"), "--frames", "all",
                 "--out", str(out), "--quiet", "--ignore-intended-use"]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in recs] == list(range(30)) and {r["intended_use"] for r in recs} == {"ignored"}
    assert main(["predict", str(tmp_path / "missing.tflite"), str(out)]) == 3  # the model cannot run


def test_worker_pool_gives_the_same_records_as_sequential(int8_model, dicom_dir):
    from medlite.edge import batch

    model = load(int8_model)
    files = [str(f) for f in sorted(dicom_dir.glob("*.dcm"))] * 3
    strip = lambda recs: [{k: v for k, v in r.items() if k != "latency_ms"} for r in recs]  # noqa: E731
    assert strip(batch.run(model, files, workers=2)) == strip(batch.run(model, files, workers=0))


def test_gpu_reason_names_the_import_failure(monkeypatch, int8_model):
    import sys

    gpu._PROBED.clear()
    monkeypatch.setitem(sys.modules, "ai_edge_litert.compiled_model", None)  # as when ml_dtypes is missing
    # A Vulkan loader present (or none needed), so the import is what fails: the loader is looked for first.
    find = gpu.ctypes.util.find_library
    monkeypatch.setattr(gpu.ctypes.util, "find_library", lambda name: "libvulkan.so.1" if name == "vulkan" else find(name))
    try:
        ok, why = gpu.is_available(Options(path=str(int8_model)))
        assert not ok and "CompiledModel API cannot be imported" in why
        model = load(int8_model)
        assert model.backend == "cpu" and "cannot be imported" in model.attempts[1].reason  # GPU import forced off
    finally:
        gpu._PROBED.clear()


def test_folder_run_decodes_inline_when_worker_processes_cannot_start(int8_model, dicom_dir, monkeypatch, caplog):
    """As in a sandbox, or under user-mode emulation: the workers' interpreter cannot start at all."""
    import multiprocessing.spawn

    from medlite.edge import batch

    model = load(int8_model)
    files = [str(f) for f in sorted(dicom_dir.glob("*.dcm"))]
    monkeypatch.setattr(multiprocessing.spawn, "_python_exe", "/bin/false")
    with caplog.at_level("WARNING", logger="medlite"):
        records = list(batch.run(model, files, workers=2))
    assert sorted(r["status"] for r in records) == ["ok", "ok", "rejected", "rejected"]
    assert "could not start" in caplog.text


def test_dicoms_outside_the_intended_use_are_rejected_with_a_reason(int8_model, dicom_dir, tmp_path,
                                                                     pydicom_file, capsys):
    """The chest X-ray model: ultrasound of every kind and a CR of the cervical spine are rejected before
    decoding; the CR chest PA and the DX chest (no body part tag: nothing to mismatch) are answered."""
    us = [pydicom_file(n) for n in ("examples_rgb_color.dcm", "examples_palette.dcm", "examples_ybr_color.dcm",
                                    "examples_jpeg2k.dcm")] + [str(dicom_dir / "US1_UNCR.dcm"),
                                                               str(dicom_dir / "OBXXXX1A_rle.dcm")]
    spine = pydicom_file("dicomdirtests/77654033/CR1/6154")  # CR, BodyPartExamined CSPINE
    chest = [str(dicom_dir / "RG1_J2KI.dcm"), str(dicom_dir / "nih_cxr14_dx_nofinding.dcm")]
    out = tmp_path / "p.jsonl"
    assert main(["predict", str(int8_model), *us, spine, *chest, "--out", str(out), "-q"]) == 0
    recs = {r["file"]: r for r in map(json.loads, out.read_text().splitlines())}
    for f in us:
        assert recs[f] == {"file": f, "status": "rejected",
                           "reason": "modality US is not among this model's intended inputs (CR, DX)"}
    assert recs[spine]["status"] == "rejected"
    assert recs[spine]["reason"] == "body part CSPINE is not among this model's intended inputs (CHEST)"
    assert all(recs[f]["status"] == "ok" and "intended_use" not in recs[f] for f in chest)
    model = load(int8_model)
    assert model.contract.intended_use.modalities == ("CR", "DX")
    with pytest.raises(Rejected, match="modality US"):
        model.predict(us[0])
    assert main(["predict", str(int8_model), us[0], "--out", str(out), "-q", "--ignore-intended-use"]) == 0
    (rec,) = map(json.loads, out.read_text().splitlines())
    assert rec["status"] == "ok" and rec["intended_use"] == "ignored"
