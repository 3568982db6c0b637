"""`medlite serve` with real DICOM peers on localhost: pynetdicom's storescp as the PACS, an SCU built with
pynetdicom as the cart's modality, and the node itself as a separate process that can be killed."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from medlite.edge import sr

OUTSIDE = os.path.dirname(os.path.abspath(__file__))  # never the checkout's root (see test_no_tensorflow)
CINE = "examples_ybr_color.dcm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Peer:
    """A subprocess on localhost with its log."""

    def __init__(self, args: list[str], log: Path):
        self.log = log
        self._fh = open(log, "ab")
        self.proc = subprocess.Popen(args, cwd=OUTSIDE, stdout=self._fh, stderr=subprocess.STDOUT)

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=60)
        self._fh.close()
        return rc


def wait_listening(port: int, aet: str, timeout: float = 60, calling: str = "PROBE") -> None:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    deadline = time.time() + timeout
    while time.time() < deadline:
        assoc = ae.associate("127.0.0.1", port, ae_title=aet)
        if assoc.is_established:
            status = assoc.send_c_echo()
            assoc.release()
            assert status.Status == 0
            return
        time.sleep(0.3)
    raise AssertionError(f"nothing answered on port {port}")


def start_pacs(folder: Path, port: int) -> Peer:
    folder.mkdir(parents=True, exist_ok=True)
    pacs = Peer([sys.executable, "-m", "pynetdicom", "storescp", str(port), "-aet", "PACS", "-od", str(folder)],
                folder.parent / "pacs.log")
    wait_listening(port, "PACS")
    return pacs


def start_node(model: Path, out: Path, port: int, *extra: str, wait: bool = True) -> Peer:
    node = Peer([sys.executable, "-m", "medlite", "serve", str(model), "--out", str(out), "--port", str(port),
                 *extra], out.parent / f"{out.name}.log")
    if wait:
        wait_listening(port, "MEDLITE", calling=(extra[extra.index("--allow") + 1] if "--allow" in extra
                                                   else "PROBE"))
    return node


def send(files: list[Path], port: int, calling: str = "MODALITY", called: str = "MEDLITE") -> dict[str, int]:
    """C-STORE each file over one association; SOP Instance UID -> status (None when not answered)."""
    datasets = [pydicom.dcmread(f) for f in files]
    ae = AE(ae_title=calling)
    for context in {(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets}:
        ae.add_requested_context(*context)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, "the node refused the association"
    out = {}
    for ds in datasets:
        status = assoc.send_c_store(ds)
        out[str(ds.SOPInstanceUID)] = getattr(status, "Status", None)
    assoc.release()
    return out


def copies(sources: list[Path], n: int, folder: Path) -> list[Path]:
    """``n`` real images cycled from ``sources``, each with a new SOP Instance UID."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        ds = pydicom.dcmread(sources[i % len(sources)])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = folder / f"{i:04d}.dcm"
        ds.save_as(path)
        out.append(path)
    return out


def reports_at(folder: Path) -> dict[str, pydicom.Dataset]:
    """Structured Reports in a storescp folder, by the SOP Instance UID of the image each references."""
    out = {}
    for f in folder.glob("*"):
        try:
            ds = pydicom.dcmread(f)
        except Exception:  # storescp is still writing it: the next look sees it whole
            continue
        if ds.Modality != "SR":
            continue
        (evidence,) = ds.CurrentRequestedProcedureEvidenceSequence
        ref = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        out[str(ref)] = ds
    return out


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux's /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Running: it exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(predicate, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError("timed out")


def texts_and_codes(ds) -> list[str]:
    out = []
    for item in getattr(ds, "ContentSequence", []):
        if "TextValue" in item:
            out.append(str(item.TextValue))
        if "ConceptCodeSequence" in item:
            out.append(str(item.ConceptCodeSequence[0].CodeMeaning))
        if "MeasuredValueSequence" in item:
            out.append(f"{item.ConceptNameCodeSequence[0].CodeMeaning}={item.MeasuredValueSequence[0].NumericValue}")
        out.extend(texts_and_codes(item))
    return out


@pytest.fixture
def sources(dicom_dir, pydicom_file) -> list[Path]:
    return sorted(dicom_dir.glob("*.dcm")) + [Path(pydicom_file(CINE))]


def test_images_in_reports_out_at_the_pacs(int8_model, sources, tmp_path):
    """The shared X-ray and ultrasound DICOMs and a JPEG cine (J2K, RLE, JPEG baseline, uncompressed) go in by
    C-STORE; a C-ECHO is answered; every image gets a report at the PACS that references it, names the
    model's SHA-256, carries the patient and study, is UNVERIFIED, and says "not analysed" with the reason for
    ultrasound. The node's log holds no patient name, ID or birth date."""
    from medlite.edge import load

    sha = load(int8_model).sha256
    pacs_port, node_port = free_port(), free_port()
    pacs = start_pacs(tmp_path / "pacs", pacs_port)
    node = start_node(int8_model, tmp_path / "node", node_port, "--forward", f"127.0.0.1:{pacs_port}:PACS")
    try:
        statuses = send(sources, node_port)
        assert all(s == 0 for s in statuses.values())
        wait_for(lambda: len(reports_at(tmp_path / "pacs")) == len(sources))
    finally:
        assert node.stop() == 0
        pacs.stop()
    reports = reports_at(tmp_path / "pacs")
    for f in sources:
        src = pydicom.dcmread(f, stop_before_pixels=True)
        report = reports[str(src.SOPInstanceUID)]
        items = texts_and_codes(report)
        assert f"model SHA-256 {sha}" in items
        assert report.VerificationFlag == "UNVERIFIED" and report.CompletionFlag == "COMPLETE"
        assert report.StudyInstanceUID == src.StudyInstanceUID and report.PatientID == src.get("PatientID", "")
        assert report.SOPInstanceUID == sr.report_uid(src.SOPInstanceUID, sha)
        if src.Modality == "US":
            assert sr.NOT_ANALYSED.meaning in items
            assert any("modality US is not among" in t for t in items)
        else:
            assert sr.ANALYSED.meaning in items and any(t.startswith("Model score=") for t in items)
            assert any(t.startswith("Operating point=") for t in items)
    log = (tmp_path / "node.log").read_text()
    assert "C-ECHO from PROBE" in log
    for f in sources:
        src = pydicom.dcmread(f, stop_before_pixels=True)
        for key in ("PatientName", "PatientID", "PatientBirthDate"):
            value = str(src.get(key, "") or "")
            if value:  # as a value of its own, not digits inside a UID
                assert not re.search(rf"(?<![\w.]){re.escape(value)}(?![\w.])", log), key
    assert not list((tmp_path / "node" / "incoming").iterdir()) and not list((tmp_path / "node" / "outbox").iterdir())


def test_pacs_down_node_killed_nothing_acknowledged_is_lost(int8_model, dicom_dir, tmp_path):
    """The PACS is down; 20 images are sent; the node is killed with SIGKILL while still analysing; then both
    restart. Every image whose C-STORE was acknowledged has exactly one report at the PACS."""
    pacs_port, node_port = free_port(), free_port()
    images = copies([dicom_dir / "RG1_J2KI.dcm", dicom_dir / "nih_cxr14_dx_nofinding.dcm"], 20, tmp_path / "in")
    args = ("--forward", f"127.0.0.1:{pacs_port}:PACS")
    node = start_node(int8_model, tmp_path / "node", node_port, *args)
    statuses = send(images, node_port)
    acknowledged = {uid for uid, s in statuses.items() if s == 0}
    assert len(acknowledged) == 20
    workers = children(node.proc.pid)
    assert workers, "the node had no worker processes to leave behind"
    node.stop(signal.SIGKILL)
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=10)  # no orphans left running
    left = list((tmp_path / "node" / "incoming").glob("*.dcm"))
    waiting = list((tmp_path / "node" / "outbox").glob("*.dcm"))
    assert left, "the node had analysed everything before the kill; the test proves nothing"
    pacs = start_pacs(tmp_path / "pacs", pacs_port)
    node = start_node(int8_model, tmp_path / "node", node_port, *args)
    try:
        wait_for(lambda: set(reports_at(tmp_path / "pacs")) >= acknowledged)
        wait_for(lambda: not list((tmp_path / "node" / "outbox").glob("*.dcm")))
    finally:
        node.stop()
        pacs.stop()
    assert len(list((tmp_path / "pacs").glob("*"))) == 20  # one report per image, stored under its own UID
    assert "recovering" in (tmp_path / "node.log").read_text() and len(left) + len(waiting) > 0


def test_an_unreadable_image_gets_a_report_and_the_node_keeps_serving(int8_model, dicom_dir, tmp_path):
    """A DICOM whose pixel data is cut short: acknowledged, reported as "could not be read" with the reason;
    the next image is analysed as usual. A file with no DICOM header at all is kept in failed/."""
    port = free_port()
    ds = pydicom.dcmread(dicom_dir / "nih_cxr14_dx_nofinding.dcm")
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad)
    node = start_node(int8_model, tmp_path / "node", port)
    try:
        assert send([bad, dicom_dir / "nih_cxr14_dx_nofinding.dcm"], port) == {
            str(ds.SOPInstanceUID): 0, str(pydicom.dcmread(dicom_dir / "nih_cxr14_dx_nofinding.dcm").SOPInstanceUID): 0}
        wait_for(lambda: len(list((tmp_path / "node" / "reports").glob("*.dcm"))) == 2)
    finally:
        node.stop()
    reports = {str(r.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
                   .ReferencedSOPSequence[0].ReferencedSOPInstanceUID): texts_and_codes(r)
               for r in map(pydicom.dcmread, (tmp_path / "node" / "reports").glob("*.dcm"))}
    assert sr.UNREADABLE.meaning in reports[str(ds.SOPInstanceUID)]
    assert any("truncated" in t or "could not" in t for t in reports[str(ds.SOPInstanceUID)])
    assert sum(sr.ANALYSED.meaning in items for items in reports.values()) == 1


def test_an_unknown_calling_ae_is_refused(int8_model, dicom_dir, tmp_path):
    port = free_port()
    node = start_node(int8_model, tmp_path / "node", port, "--allow", "CART1")
    try:
        ae = AE(ae_title="INTRUDER")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="MEDLITE")
        assert assoc.is_rejected
        assert send([dicom_dir / "nih_cxr14_dx_nofinding.dcm"], port, calling="CART1")
    finally:
        node.stop()
    log = (tmp_path / "node.log").read_text()
    assert "association from INTRUDER refused" in log


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a test certificate")
def test_tls(int8_model, dicom_dir, tmp_path):
    """With --tls-cert/--tls-key the node speaks DICOM over TLS only: a plain association fails, a TLS one
    stores an image."""
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    port = free_port()
    node = start_node(int8_model, tmp_path / "node", port, "--tls-cert", str(cert), "--tls-key", str(key),
                      wait=False)
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(Verification)
        deadline = time.time() + 60
        while time.time() < deadline:
            assoc = ae.associate("127.0.0.1", port, ae_title="MEDLITE", tls_args=(ctx, "localhost"))
            if assoc.is_established:
                break
            time.sleep(0.3)
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        plain = ae.associate("127.0.0.1", port, ae_title="MEDLITE")
        assert not plain.is_established
    finally:
        node.stop()


def test_under_the_frame_policy_all_every_frame_of_a_cine_is_reported(int8_model, pydicom_file, tmp_path):
    """`serve --frames all`, with a model whose contract has no modality rule (so that the ultrasound cine is
    analysed): the 30-frame JPEG cine gets 30 records in results.jsonl and one report with 30 measurement groups,
    one on each frame."""
    import json

    from medlite.convert.contract_writer import embed_contract
    from medlite.edge import read_contract
    from medlite.edge.contract import IntendedUse

    blob = int8_model.read_bytes()
    c = read_contract(blob)
    model = tmp_path / "all_frames.tflite"
    model.write_bytes(embed_contract(blob, c.replace(intended_use=IntendedUse())))
    port = free_port()
    node = start_node(model, tmp_path / "node", port, "--frames", "all")
    cine = Path(pydicom_file(CINE))
    uid = str(pydicom.dcmread(cine, stop_before_pixels=True).SOPInstanceUID)
    try:
        assert send([cine], port) == {uid: 0}
        wait_for(lambda: (tmp_path / "node" / "results.jsonl").exists() and
                 len((tmp_path / "node" / "results.jsonl").read_text().splitlines()) == 30)
    finally:
        assert node.stop() == 0
    recs = [json.loads(line) for line in (tmp_path / "node" / "results.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in recs] == list(range(30)) and all(r["status"] == "ok" for r in recs)
    (report,) = [pydicom.dcmread(f) for f in (tmp_path / "node" / "reports").glob("*.dcm")]
    (measurements,) = [item for item in report.ContentSequence
                       if item.ConceptNameCodeSequence[0].CodeValue == "126010"]  # Imaging Measurements
    frames = [ref.ReferencedFrameNumber for g in measurements.ContentSequence if g.ValueType == "CONTAINER"
              for i in g.ContentSequence if "ReferencedSOPSequence" in i for ref in i.ReferencedSOPSequence]
    assert sorted(int(f) for f in frames) == list(range(1, 31))
