"""`medlite serve` with real DICOM peers on localhost: pynetdicom's storescp as the PACS, an SCU built with
pynetdicom as the cart's modality, and the node itself as a separate process that can be killed."""

import errno
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
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


def objects_at(folder: Path, modality: str) -> list[Path]:
    """The DICOM files of one modality in a folder: SR (the reports) or OT (the heatmaps over the images)."""
    out = []
    for f in folder.glob("*"):
        try:
            if pydicom.dcmread(f, stop_before_pixels=True).Modality == modality:
                out.append(f)
        except Exception:  # still being written: the next look sees it whole
            continue
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
        assert report.SeriesDescription.startswith("medlite ") and report.SeriesDescription.endswith(" int8")
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
    # Each line's time stamp left out: its milliseconds can spell a short patient ID ("204").
    log = re.sub(r"(?m)^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", "", log)
    for f in sources:
        src = pydicom.dcmread(f, stop_before_pixels=True)
        for key in ("PatientName", "PatientID", "PatientBirthDate"):
            value = str(src.get(key, "") or "")
            if value:  # as a value of its own, not digits inside a UID
                assert not re.search(rf"(?<![\w.]){re.escape(value)}(?![\w.])", log), key
    assert not list((tmp_path / "node" / "incoming").iterdir()) and not list((tmp_path / "node" / "outbox").iterdir())


def test_a_report_marks_the_finding_on_the_image_for_a_viewer(int8_model, dicom_dir, tmp_path):
    """An analysed chest film's report, read back with highdicom's reader (as viewer software reads it): one
    planar ROI group whose image region is the heatmap's box, a closed POLYLINE on the source image, and a
    POINT at the heatmap's peak, both equal to results.jsonl's box and peak. --no-heatmap leaves them out."""
    import highdicom as hd

    image = dicom_dir / "nih_cxr14_dx_nofinding.dcm"
    uid = str(pydicom.dcmread(image, stop_before_pixels=True).SOPInstanceUID)
    for heatmap in (True, False):
        port, out = free_port(), tmp_path / f"node-{heatmap}"
        node = start_node(int8_model, out, port, *(() if heatmap else ("--no-heatmap",)))
        try:
            assert send([image], port) == {uid: 0}
            wait_for(lambda: objects_at(out / "reports", "SR"))
        finally:
            node.stop()
        (report,) = [hd.sr.srread(f) for f in objects_at(out / "reports", "SR")]
        (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        rois = report.content.get_planar_roi_measurement_groups()
        pictures = objects_at(out / "reports", "OT")
        if not heatmap:
            assert not rois and "box" not in record and len(report.content.get_image_measurement_groups()) == 1
            assert not pictures and "heatmap_image" not in record and "heatmap_segmentation" not in record
            assert not objects_at(out / "reports", "SEG")
            continue
        # The heatmap over the image, a Secondary Capture in the image's study, named by the record and listed
        # in the report's evidence.
        (picture,) = [pydicom.dcmread(f) for f in pictures]
        src = pydicom.dcmread(image, stop_before_pixels=True)
        assert str(picture.SOPInstanceUID) == record["heatmap_image"] and picture.StudyInstanceUID == src.StudyInstanceUID
        assert picture.SourceImageSequence[0].ReferencedSOPInstanceUID == uid and picture.SamplesPerPixel == 3
        assert picture.SeriesDescription.startswith("medlite heatmap") and max(picture.Rows, picture.Columns) <= 512
        evidence = {str(ref.ReferencedSOPInstanceUID) for e in report.CurrentRequestedProcedureEvidenceSequence
                    for series in e.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}
        assert evidence == {uid, record["heatmap_image"], record["heatmap_segmentation"]}
        (group,) = rois
        x0, y0, x1, y1 = record["box"]
        assert group.roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        assert group.roi.value.tolist() == [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        (selected,) = group.roi.ContentSequence
        assert selected.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == uid
        (peak,) = [item for item in group[0].ContentSequence
                   if item.ConceptNameCodeSequence[0].CodeValue == sr.PEAK.value]
        assert peak.GraphicType == "POINT" and list(peak.GraphicData) == [record["peak"][0] + 0.5,
                                                                         record["peak"][1] + 0.5]
        assert peak.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == uid
        assert 0 <= x0 < x1 <= pydicom.dcmread(image, stop_before_pixels=True).Columns


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
    assert len(objects_at(tmp_path / "pacs", "SR")) == 20  # one report per image, stored under its own UID
    analysed = len({r["sop_instance_uid"] for r in map(json.loads, (tmp_path / "node" / "results.jsonl").read_text()
                                                       .splitlines()) if r["status"] == "ok"})
    assert len(objects_at(tmp_path / "pacs", "OT")) == analysed  # and one heatmap per analysed image
    assert "recovering" in (tmp_path / "node.log").read_text() and len(left) + len(waiting) > 0


class RefusingPacs:
    """A PACS (pynetdicom, in this process) that refuses the first report for good (0xC000, cannot
    understand), the second for now on its first try (0xA700, out of resources), and stores the rest."""

    def __init__(self, port: int):
        from pynetdicom import evt
        from pynetdicom.sop_class import Comprehensive3DSRStorage

        self.stored, self.tries = [], {}
        ae = AE(ae_title="PACS")
        ae.add_supported_context(Comprehensive3DSRStorage)
        self.server = ae.start_server(("127.0.0.1", port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event):
        uid = str(event.request.AffectedSOPInstanceUID)
        self.tries[uid] = self.tries.get(uid, 0) + 1
        first_seen = list(self.tries)
        if uid == first_seen[0]:
            return 0xC000
        if uid == first_seen[1] and self.tries[uid] == 1:
            return 0xA700
        self.stored.append(uid)
        return 0x0000


def test_a_report_refused_for_good_is_set_aside_and_the_rest_still_reach_the_pacs(int8_model, dicom_dir, tmp_path):
    """One report refused for good goes to node/refused/ with the status named in the log; one refused for now
    (out of resources) is sent again; every later report is stored."""
    pacs_port, node_port = free_port(), free_port()
    pacs = RefusingPacs(pacs_port)
    images = copies([dicom_dir / "nih_cxr14_dx_nofinding.dcm"], 5, tmp_path / "in")
    node = start_node(int8_model, tmp_path / "node", node_port, "--forward", f"127.0.0.1:{pacs_port}:PACS",
                      "--no-heatmap")  # reports only: this PACS takes no images
    try:
        assert set(send(images, node_port).values()) == {0}
        wait_for(lambda: len(pacs.stored) == 4)
        wait_for(lambda: not list((tmp_path / "node" / "outbox").glob("*.dcm")))
    finally:
        node.stop()
        pacs.server.shutdown()
    refused = list((tmp_path / "node" / "refused").glob("*.dcm"))
    first, second = list(pacs.tries)[:2]
    assert [str(pydicom.dcmread(f).SOPInstanceUID) for f in refused] == [first]
    assert pacs.tries[first] == 1 and pacs.tries[second] == 2 and second in pacs.stored
    log = (tmp_path / "node.log").read_text()
    assert "refused report" in log and "for good (status 0xC000, Cannot Understand)" in log
    assert "for now (status 0xA700, Refused: Out of Resources)" in log


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
        wait_for(lambda: len(objects_at(tmp_path / "node" / "reports", "SR")) == 2)
    finally:
        node.stop()
    reports = {str(r.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
                   .ReferencedSOPSequence[0].ReferencedSOPInstanceUID): texts_and_codes(r)
               for r in map(pydicom.dcmread, objects_at(tmp_path / "node" / "reports", "SR"))}
    assert sr.UNREADABLE.meaning in reports[str(ds.SOPInstanceUID)]
    assert any("truncated" in t or "could not" in t for t in reports[str(ds.SOPInstanceUID)])
    assert sum(sr.ANALYSED.meaning in items for items in reports.values()) == 1


def test_an_image_whose_analysis_keeps_failing_is_set_aside_after_n_tries(int8_model, dicom_dir, tmp_path):
    """A real chest film whose header no report can hold (its StudyDate is not a date): the analysis fails,
    the image stays in incoming/ for the next start and, failing there again (--give-up-after 2), moves to
    failed/ with its record, where before it was retried on every start for ever; the next image is reported."""
    port = free_port()
    ds = pydicom.dcmread(dicom_dir / "nih_cxr14_dx_nofinding.dcm")
    ds.StudyDate = "notadate"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad)
    good = copies([dicom_dir / "nih_cxr14_dx_nofinding.dcm"], 1, tmp_path / "in")
    incoming, failed = tmp_path / "node" / "incoming", tmp_path / "node" / "failed"
    for attempt in (1, 2):
        node = start_node(int8_model, tmp_path / "node", port, "--give-up-after", "2")
        try:
            if attempt == 1:
                assert set(send([bad, *good], port).values()) == {0}
            wait_for(lambda: "try 1 of 2" in (tmp_path / "node.log").read_text() if attempt == 1 else
                     list(failed.glob("*.dcm")))
        finally:
            node.stop()
        if attempt == 1:
            assert (incoming / f"{ds.SOPInstanceUID}.dcm").exists()
    assert [f.name for f in failed.glob("*.dcm")] == [f"{ds.SOPInstanceUID}.dcm"] and not list(incoming.glob("*"))
    records = [json.loads(line) for line in (tmp_path / "node" / "results.jsonl").read_text().splitlines()]
    mine = [r for r in records if r["sop_instance_uid"] == str(ds.SOPInstanceUID)]
    assert len(mine) == 1 and mine[0]["status"] == "error" and "2 tries failed (ValueError)" in mine[0]["error"]
    assert sum(r["status"] == "ok" for r in records) == 1
    assert "failed 2 times (ValueError); moved to failed/" in (tmp_path / "node.log").read_text()


def test_an_image_with_an_invalid_uid_is_refused_and_the_next_is_analysed(int8_model, dicom_dir, tmp_path):
    """A SOP Instance UID that is not a UID (letters; it would also name the file in incoming/) is refused with
    0xA900 and leaves nothing behind; the image after it is stored and reported as usual."""
    port = free_port()
    ds = pydicom.dcmread(dicom_dir / "nih_cxr14_dx_nofinding.dcm")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.840.abc"
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad)
    good = copies([dicom_dir / "nih_cxr14_dx_nofinding.dcm"], 1, tmp_path / "in")
    node = start_node(int8_model, tmp_path / "node", port)
    try:
        statuses = send([bad, *good], port)
        assert statuses["1.2.840.abc"] == 0xA900 and statuses[str(pydicom.dcmread(good[0]).SOPInstanceUID)] == 0
        wait_for(lambda: objects_at(tmp_path / "node" / "reports", "SR"))
    finally:
        node.stop()
    assert not list((tmp_path / "node" / "incoming").iterdir())
    assert len((tmp_path / "node" / "results.jsonl").read_text().splitlines()) == 1
    assert "refused: the SOP Instance UID is not a valid UID" in (tmp_path / "node.log").read_text()


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


def _certificate(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_reports_go_to_a_tls_pacs_that_requires_the_node_s_certificate(int8_model, dicom_dir, tmp_path):
    """The PACS speaks TLS only and requires a client certificate that it trusts: with --forward-tls-ca and
    --forward-tls-cert/-key the report is stored there; a node without the certificate keeps it in its outbox."""
    import ssl

    from pynetdicom import evt
    from pynetdicom.sop_class import Comprehensive3DSRStorage

    pacs_cert, pacs_key = _certificate(tmp_path, "pacs")
    node_cert, node_key = _certificate(tmp_path, "node")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pacs_cert, pacs_key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(node_cert)
    stored = []
    ae = AE(ae_title="PACS")
    ae.add_supported_context(Comprehensive3DSRStorage)
    pacs_port = free_port()
    server = ae.start_server(("127.0.0.1", pacs_port), block=False, ssl_context=ctx, evt_handlers=[
        (evt.EVT_C_STORE, lambda event: stored.append(str(event.request.AffectedSOPInstanceUID)) or 0x0000)])
    image = dicom_dir / "nih_cxr14_dx_nofinding.dcm"
    uid = str(pydicom.dcmread(image, stop_before_pixels=True).SOPInstanceUID)
    forward = ("--forward", f"localhost:{pacs_port}:PACS", "--forward-tls-ca", str(pacs_cert), "--no-heatmap")
    try:
        port = free_port()
        node = start_node(int8_model, tmp_path / "node", port, *forward, "--forward-tls-cert", str(node_cert),
                          "--forward-tls-key", str(node_key))
        try:
            assert send([image], port) == {uid: 0}
            wait_for(lambda: len(stored) == 1)
        finally:
            node.stop()
        port = free_port()
        node = start_node(int8_model, tmp_path / "stranger", port, *forward)
        try:
            assert send([image], port) == {uid: 0}
            wait_for(lambda: "unreachable or busy" in (tmp_path / "stranger.log").read_text())
        finally:
            node.stop()
    finally:
        server.shutdown()
    assert len(stored) == 1 and len(list((tmp_path / "stranger" / "outbox").glob("*.dcm"))) == 1


def test_with_tls_ca_a_sender_needs_a_certificate_the_node_trusts(int8_model, tmp_path):
    """--tls-ca: a sender with the trusted certificate is let in; one with no certificate, or a foreign one, is
    not."""
    import ssl

    node_cert, node_key = _certificate(tmp_path, "node")
    trusted_cert, trusted_key = _certificate(tmp_path, "modality")
    foreign_cert, foreign_key = _certificate(tmp_path, "foreign")
    port = free_port()
    node = start_node(int8_model, tmp_path / "node", port, "--tls-cert", str(node_cert), "--tls-key", str(node_key),
                      "--tls-ca", str(trusted_cert), wait=False)

    def echo(cert=None, key=None) -> bool:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(node_cert))
        if cert:
            ctx.load_cert_chain(cert, key)
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="MEDLITE", tls_args=(ctx, "localhost"))
        if not assoc.is_established:
            return False
        ok = assoc.send_c_echo().Status == 0
        assoc.release()
        return ok

    try:
        wait_for(lambda: echo(trusted_cert, trusted_key), timeout=60)
        assert not echo() and not echo(foreign_cert, foreign_key)
    finally:
        node.stop()


def test_a_seventeenth_association_at_once_is_refused_for_now_and_the_node_goes_on(int8_model, tmp_path):
    """The node holds 16 associations at once; the 17th is rejected (transient: the local limit), and once the
    others are released a new one is let in."""
    port = free_port()
    node = start_node(int8_model, tmp_path / "node", port)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    held = []
    try:
        held = [ae.associate("127.0.0.1", port, ae_title="MEDLITE") for _ in range(16)]
        assert all(a.is_established for a in held)
        extra = ae.associate("127.0.0.1", port, ae_title="MEDLITE")
        assert extra.is_rejected and not extra.is_established
        for a in held:
            a.release()
        held = []
        late = ae.associate("127.0.0.1", port, ae_title="MEDLITE")
        assert late.is_established and late.send_c_echo().Status == 0
        late.release()
    finally:
        for a in held:
            a.release()
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
    import highdicom as hd

    (report,) = [hd.sr.srread(f) for f in objects_at(tmp_path / "node" / "reports", "SR")]
    groups = report.content.get_planar_roi_measurement_groups()  # each frame's heatmap box on that frame
    frames = [ref.ReferencedFrameNumber for g in groups for ref in g.roi.ContentSequence[0].ReferencedSOPSequence]
    assert sorted(int(f) for f in frames) == list(range(1, 31))
    assert [list(g.roi.value[0]) for g in groups] == [r["box"][:2] for r in recs]


# -- real peers: DCMTK's storescu as the modality, Orthanc as the PACS, dciodvfy as the validator -------------
# Each test skips with a one-line reason where its program is missing; .ci/run installs them (Debian: orthanc,
# dcmtk, dicom3tools).

def _needs(program: str, package: str):
    return pytest.mark.skipif(shutil.which(program) is None,
                              reason=f"{program} is not installed (Debian package {package}; .ci/run installs it)")


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        body = r.read()
    return json.loads(body) if r.headers.get_content_type() == "application/json" else body


def start_orthanc(folder: Path, http: int, dicom: int, **settings) -> tuple[Peer, str]:
    """Orthanc on the given ports with a temporary configuration (plus ``settings``) and storage in ``folder``:
    the process and its REST API's address, once it answers."""
    config = folder / "orthanc.json"
    config.write_text(json.dumps({
        "Name": "medlite-test", "StorageDirectory": str(folder / "orthanc-db"),
        "IndexDirectory": str(folder / "orthanc-db"), "HttpPort": http, "DicomPort": dicom, "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "Plugins": [], **settings}))
    peer = Peer(["Orthanc", str(config)], folder / "orthanc.log")
    api = f"http://127.0.0.1:{http}"
    deadline = time.time() + 60
    while True:
        try:
            _get(f"{api}/system")
            return peer, api
        except OSError:
            if time.time() > deadline or peer.proc.poll() is not None:
                raise AssertionError("Orthanc did not start: " + (folder / "orthanc.log").read_text()[-2000:])
            time.sleep(0.3)


@pytest.fixture
def orthanc(tmp_path):
    """Orthanc on free ports: its REST API's address and its DICOM port."""
    if shutil.which("Orthanc") is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc; .ci/run installs it)")
    dicom = free_port()
    peer, api = start_orthanc(tmp_path, free_port(), dicom)
    yield api, dicom
    peer.stop()


def _stored(api: str) -> list[bytes]:
    """Every instance Orthanc holds, as the DICOM files its REST API gives back."""
    return [_get(f"{api}/instances/{i}/file") for i in _get(f"{api}/instances")]


@_needs("storescu", "dcmtk")
@_needs("dciodvfy", "dicom3tools")
def test_storescu_to_the_node_to_orthanc_with_the_finding_on_the_image(orthanc, int8_model, dicom_dir, tmp_path):
    """storescu sends two chest films and an ultrasound image to `medlite serve`, which forwards to Orthanc. At
    Orthanc, each image's study holds one report (read back with highdicom) whose values are results.jsonl's:
    for an analysed film, the decision and a planar ROI on that image (the heatmap's box and peak), and the
    heatmap twice, as a picture over the image and as a Segmentation of it (read back with highdicom: its map
    peaks where the record's peak is); for the ultrasound, "not analysed". dciodvfy finds no error in any
    object medlite wrote."""
    import highdicom as hd

    from medlite.edge import sr

    api, pacs_port = orthanc
    images = [dicom_dir / "nih_cxr14_dx_nofinding.dcm", dicom_dir / "RG1_J2KI.dcm", dicom_dir / "US1_UNCR.dcm"]
    port = free_port()
    node = start_node(int8_model, tmp_path / "node", port, "--forward", f"127.0.0.1:{pacs_port}:ORTHANC")
    try:
        sent = subprocess.run(["storescu", "-xw", "-aet", "MODALITY", "-aec", "MEDLITE", "127.0.0.1", str(port),
                               *map(str, images)], capture_output=True, text=True, timeout=120)
        assert sent.returncode == 0, sent.stderr
        # Three reports and the two chest films' heatmaps, each a picture and a segmentation (the ultrasound
        # image is outside the intended use).
        wait_for(lambda: len(_get(f"{api}/instances")) == len(images) + 4)
        # The same image sent again (a modality's retry): analysed again, and the same report and picture (their
        # UIDs derive from the image and the model), so the PACS still holds one of each.
        again = subprocess.run(["storescu", "-aec", "MEDLITE", "127.0.0.1", str(port), str(images[0])],
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr
        results = tmp_path / "node" / "results.jsonl"
        wait_for(lambda: len(results.read_text().splitlines()) == len(images) + 1
                 and not list((tmp_path / "node" / "outbox").glob("*.dcm")))
        assert len(_get(f"{api}/instances")) == len(images) + 4
    finally:
        node.stop()
    records = {r["sop_instance_uid"]: r for r in
               map(json.loads, (tmp_path / "node" / "results.jsonl").read_text().splitlines())}
    at_pacs = [pydicom.dcmread(io.BytesIO(b)) for b in _stored(api)]
    reports = [hd.sr.srread(io.BytesIO(b)) for b in _stored(api) if pydicom.dcmread(io.BytesIO(b)).Modality == "SR"]
    pictures = {str(p.SOPInstanceUID): p for p in at_pacs if p.Modality == "OT"}
    segmentations = {str(p.SOPInstanceUID): p for p in at_pacs if p.Modality == "SEG"}
    stored = {str(r.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
                  .ReferencedSOPInstanceUID): r for r in reports}
    analysed = 0
    for image in images:
        src = pydicom.dcmread(image, stop_before_pixels=True)
        uid = str(src.SOPInstanceUID)
        report = stored[uid]
        assert report.StudyInstanceUID == src.StudyInstanceUID and report.Modality == "SR"
        record = records[uid]
        rois = report.content.get_planar_roi_measurement_groups()
        if record["status"] != "ok":
            assert src.Modality == "US" and record["status"] == "rejected" and not rois
            continue
        analysed += 1
        (group,) = rois
        x0, y0, x1, y1 = record["box"]
        assert group.roi.value.tolist() == [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        assert group.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == uid
        decision = [e for e in group.get_qualitative_evaluations() if e.name.value == sr.DECISION.value]
        assert decision[0].value.meaning == record["label"]
        picture = pictures[record["heatmap_image"]]  # the heatmap, in the image's study at the PACS
        assert picture.StudyInstanceUID == src.StudyInstanceUID
        assert picture.SourceImageSequence[0].ReferencedSOPInstanceUID == uid
        seg = hd.seg.Segmentation.from_dataset(segmentations[record["heatmap_segmentation"]])
        assert seg.StudyInstanceUID == src.StudyInstanceUID and seg.get_source_image_uids()[0][2] == uid
        (segment,) = seg.SegmentSequence
        assert segment.SegmentedPropertyTypeCodeSequence[0].CodeMeaning in ("pneumonia", record["label"])
        values = seg.get_pixels_by_source_instance([uid], segment_numbers=[1], rescale_fractional=True)[0, ..., 0]
        assert values.shape == (src.Rows, src.Columns)
        x, y = record["peak"]
        assert values[y, x] >= 0.95 * values.max() and values.max() > 0.95  # the record's peak, scaled to 1
        evidence = {str(s.ReferencedSOPInstanceUID) for study in report.CurrentRequestedProcedureEvidenceSequence
                    for series in study.ReferencedSeriesSequence for s in series.ReferencedSOPSequence}
        assert {uid, record["heatmap_image"], record["heatmap_segmentation"]} <= evidence  # the report names them
    assert analysed == 2
    for report in (tmp_path / "node" / "reports").glob("*.dcm"):  # every object medlite wrote
        check = subprocess.run(["dciodvfy", str(report)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{report.name}: {errors}"


@_needs("Orthanc", "orthanc")
def test_a_pacs_without_jpeg_2000_gets_the_segmentation_uncompressed(int8_model, dicom_dir, tmp_path):
    """Orthanc configured to accept no JPEG 2000: the heatmap's Segmentation, written JPEG 2000 lossless,
    reaches it uncompressed with the same map, and nothing is refused."""
    import highdicom as hd

    http, pacs_port, node_port = free_port(), free_port(), free_port()
    pacs, api = start_orthanc(tmp_path, http, pacs_port, Jpeg2000TransferSyntaxAccepted=False)
    image = dicom_dir / "nih_cxr14_dx_nofinding.dcm"
    node = start_node(int8_model, tmp_path / "node", node_port, "--forward", f"127.0.0.1:{pacs_port}:ORTHANC")
    try:
        assert set(send([image], node_port).values()) == {0}
        wait_for(lambda: len(_get(f"{api}/instances")) == 3)  # the report, the picture, the segmentation
        stored = [pydicom.dcmread(io.BytesIO(b)) for b in _stored(api)]
    finally:
        node.stop()
        pacs.stop()
    assert not (tmp_path / "node" / "refused").exists()
    (at_pacs,) = [d for d in stored if d.Modality == "SEG"]
    assert at_pacs.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    (written,) = objects_at(tmp_path / "node" / "reports", "SEG")
    ours = hd.seg.segread(written)
    assert ours.file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless
    uid = str(pydicom.dcmread(image, stop_before_pixels=True).SOPInstanceUID)
    maps = [hd.seg.Segmentation.from_dataset(d).get_pixels_by_source_instance([uid]) for d in (at_pacs, ours)]
    assert (maps[0] == maps[1]).all()


@_needs("Orthanc", "orthanc")
def test_orthanc_down_node_killed_every_acknowledged_image_reaches_it(int8_model, dicom_dir, tmp_path):
    """The earlier bar with Orthanc as the PACS: it is down while 12 images are sent and the node is killed
    with SIGKILL mid-work; both start again, and every acknowledged image has exactly one report in its study
    at Orthanc (and each analysed one its heatmap picture)."""
    http, pacs_port, node_port = free_port(), free_port(), free_port()
    images = copies([dicom_dir / "RG1_J2KI.dcm", dicom_dir / "nih_cxr14_dx_nofinding.dcm"], 12, tmp_path / "in")
    args = ("--forward", f"127.0.0.1:{pacs_port}:ORTHANC")
    node = start_node(int8_model, tmp_path / "node", node_port, *args)
    acknowledged = {uid for uid, status in send(images, node_port).items() if status == 0}
    assert len(acknowledged) == 12
    node.stop(signal.SIGKILL)
    assert list((tmp_path / "node" / "incoming").glob("*.dcm")) or \
        list((tmp_path / "node" / "outbox").glob("*.dcm")), "nothing was left to deliver; the test proves nothing"
    pacs, api = start_orthanc(tmp_path, http, pacs_port)
    node = start_node(int8_model, tmp_path / "node", node_port, *args)
    try:
        wait_for(lambda: not list((tmp_path / "node" / "incoming").glob("*.dcm"))
                 and not list((tmp_path / "node" / "outbox").glob("*.dcm")), timeout=180)
        at_pacs = [pydicom.dcmread(io.BytesIO(b), stop_before_pixels=True) for b in _stored(api)]
    finally:
        node.stop()
        pacs.stop()
    reports = [d for d in at_pacs if d.Modality == "SR"]
    referenced = [str(r.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
                      .ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for r in reports]
    assert sorted(referenced) == sorted(acknowledged)  # one report per acknowledged image, none twice
    analysed = {r["sop_instance_uid"] for r in map(json.loads, (tmp_path / "node" / "results.jsonl").read_text()
                                                    .splitlines()) if r["status"] == "ok"}
    assert sorted(str(d.SourceImageSequence[0].ReferencedSOPInstanceUID) for d in at_pacs
                  if d.Modality == "OT") == sorted(analysed)


def _fill(path: Path) -> int:
    """Write zeros to ``path`` until its file system is full; the bytes written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    written, chunk = 0, b"\0" * (1 << 20)
    try:
        while True:
            try:
                written += os.write(fd, chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                return written
    finally:
        os.close(fd)


def test_a_full_disk_refuses_new_images_and_loses_none(int8_model, dicom_dir, tmp_path):
    """The node's OUT on a 16 MiB tmpfs of its own (a mount namespace, `unshare -Urm`), filled but for one
    image's room. The image sent first is acknowledged, its report cannot be written: it stays in incoming/
    with no half-written file and no record, and the node says why. The images after it are refused with
    "out of resources" (0xA700), so that the modality keeps them. Once there is room, the first image is
    reported within seconds, the others are sent again and accepted, and every image has one whole record
    and its report at the PACS."""
    out = tmp_path / "node"
    out.mkdir()
    probe = subprocess.run(["unshare", "-Urm", "sh", "-c", f"mount -t tmpfs -o size=1m medlite-probe '{out}'"],
                           capture_output=True, text=True) if shutil.which("unshare") else None
    if probe is None or probe.returncode != 0:
        pytest.skip("a small disk of its own needs a mount namespace (unshare -Urm), which this machine does not "
                    "allow" + (f": {probe.stderr.strip()}" if probe is not None else ": unshare is missing"))
    pacs_port, node_port = free_port(), free_port()
    pacs = start_pacs(tmp_path / "pacs", pacs_port)
    images = copies([dicom_dir / "nih_cxr14_dx_nofinding.dcm"], 4, tmp_path / "in")
    node = Peer(["unshare", "-Urm", "sh", "-c", 'mount -t tmpfs -o size=16m medlite-out "$0" && exec "$@"', str(out),
                 sys.executable, "-m", "medlite", "serve", str(int8_model), "--out", str(out), "--port",
                 str(node_port), "--forward", f"127.0.0.1:{pacs_port}:PACS"], tmp_path / "node.log")
    seen = Path(f"/proc/{node.proc.pid}/root{out}")  # the node's OUT, as its own mount namespace sees it
    try:
        wait_listening(node_port, "MEDLITE")
        ballast = seen / "ballast"
        os.truncate(ballast, _fill(ballast) - images[0].stat().st_size - (64 << 10))  # one image's room
        statuses = send(images, node_port)
        first = pydicom.dcmread(images[0], stop_before_pixels=True).SOPInstanceUID
        assert statuses[str(first)] == 0
        assert set(list(statuses.values())[1:]) == {0xA700}, statuses
        wait_for(lambda: f"the report of {first} is not written" in (tmp_path / "node.log").read_text())
        assert [p.name for p in (seen / "incoming").iterdir()] == [f"{first}.dcm"]  # kept, no half-written file
        assert not list((seen / "reports").iterdir())
        assert not (seen / "results.jsonl").exists() or not (seen / "results.jsonl").read_text()
        wait_listening(node_port, "MEDLITE", timeout=5)  # the node still answers

        ballast.unlink()
        wait_for(lambda: str(first) in reports_at(tmp_path / "pacs"), timeout=60)
        assert set(send(images[1:], node_port).values()) == {0}  # the modality sends the refused ones again
        wait_for(lambda: len(reports_at(tmp_path / "pacs")) == len(images) and not list((seen / "outbox").glob("*")),
                 timeout=120)
        lines = (seen / "results.jsonl").read_text().splitlines()
    finally:
        node.stop()
        pacs.stop()
    recs = [json.loads(line) for line in lines]  # every line whole
    assert sorted(r["sop_instance_uid"] for r in recs) == sorted(statuses) and {r["status"] for r in recs} == {"ok"}
    assert "is full" in (tmp_path / "node.log").read_text() and "not stored" in (tmp_path / "node.log").read_text()
