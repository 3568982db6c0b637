"""The cart as a DICOM node: images in by C-STORE, one Structured Report out per image, forwarded to the PACS.

An image is on disk (temporary name, fsync, rename) before its C-STORE
response says success; the model runs on its own thread, so a slow model never
stalls a sender; a report is on disk before its image is let go. A crash at any
moment therefore loses nothing that was acknowledged: on start the node
finishes every image still in ``incoming/``, and the outbox keeps every report
that the PACS has not confirmed.

OUT/incoming/  images acknowledged and not yet reported (SOP Instance UID.dcm)
OUT/reports/   every report written (its own SOP Instance UID.dcm)
OUT/outbox/    reports not yet delivered to --forward (links into reports/)
OUT/failed/    files that hold no readable DICOM header, so no report can name their patient
OUT/results.jsonl  one medlite record per image, with the report's UID

Log lines name SOP Instance UIDs and AE titles, never patient data.
"""

from __future__ import annotations

import collections
import concurrent.futures
import io
import json
import logging
import multiprocessing
import os
import queue
import re
import shutil
import ssl
import threading
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pynetdicom import AE, evt
from pynetdicom import sop_class as sc
from pynetdicom.presentation import build_context

from . import durable, sr
from .batch import WINDOW, decode, decode_in_worker, decode_isolated, records, stop_pool, worker_pool
from .dicom import quiet_pydicom
from .outbox import Destination, Outbox, nodelay
from .runtime import Model

log = logging.getLogger("medlite.serve")

STORAGE = (
    sc.ComputedRadiographyImageStorage, sc.DigitalXRayImageStorageForPresentation,
    sc.DigitalXRayImageStorageForProcessing, sc.UltrasoundImageStorage, sc.UltrasoundMultiFrameImageStorage,
    sc.SecondaryCaptureImageStorage, sc.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    sc.MultiFrameGrayscaleWordSecondaryCaptureImageStorage, sc.MultiFrameTrueColorSecondaryCaptureImageStorage,
    sc.DigitalMammographyXRayImageStorageForPresentation, sc.XRayRadiofluoroscopicImageStorage,
)
# Uncompressed, and every compressed syntax that a cart sends and medlite's decoders read.
TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",  # implicit, explicit little, big endian
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",  # JPEG baseline, extended
    "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",  # JPEG lossless
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",  # JPEG-LS
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE lossless
)
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
SUCCESS, OUT_OF_RESOURCES = 0x0000, 0xA700
FAILED = object()  # a pipeline step that failed (its error logged), as against one that returned None


@dataclass
class Settings:
    out: Path
    port: int = 11112
    ae_title: str = "MEDLITE"
    bind: str = "127.0.0.1"
    allow: tuple[str, ...] = ()  # calling AE titles let in; empty: any
    forward: Destination | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None  # with it, a sender must show a certificate it signed
    workers: int = 2  # processes that decode images and build reports (0: all in the analysis thread)


def decodable_syntaxes() -> list[str]:
    """The transfer syntaxes offered: those pydicom has an installed decoder for (uncompressed always)."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID as PydicomUID

    out = []
    for ts in TRANSFER_SYNTAXES:
        uid = PydicomUID(ts)
        if not uid.is_compressed:
            out.append(ts)
            continue
        try:
            if get_decoder(uid).is_available:
                out.append(ts)
        except NotImplementedError:
            pass
    return out


class Node:
    """A Storage SCP that analyses each image with ``model`` and reports it as a DICOM SR."""

    def __init__(self, model: Model, settings: Settings):
        self.model = model
        self.s = settings
        self.dirs = {name: settings.out / name for name in ("incoming", "reports", "outbox", "failed")}
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        self.results = settings.out / "results.jsonl"
        self._work: queue.Queue[Path | None] = queue.Queue()
        self._halt = threading.Event()
        self._worker = threading.Thread(target=self._analyse_loop, name="medlite-analyse", daemon=True)
        self._server = None
        self._job = (model.contract, model.reading_rules(), model.decode_size())  # what decoding needs
        prov = model.contract.provenance
        self.algorithm = {
            "name": f"{prov.get('family', 'model')} {prov.get('training_data', '')}".strip(),
            "variant": prov.get("variant", "?"), "sha256": model.sha256,
            "provenance": ", ".join(f"{k} {v}" for k, v in sorted(prov.items()) if k not in ("variant",)),
        }
        self.outbox = Outbox(self.dirs["outbox"], settings.forward, settings.ae_title) if settings.forward else None

    # -- start and stop ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Recover what a crash left, then serve."""
        for tmp in durable.leftovers(self.dirs["incoming"]) + durable.leftovers(self.dirs["reports"]):
            tmp.unlink()  # a write never completed, so never acknowledged
        pending = sorted(self.dirs["incoming"].glob("*.dcm"), key=lambda p: p.stat().st_mtime)
        if pending:
            log.info("recovering %d image(s) received before a restart and not yet reported", len(pending))
        for p in pending:
            self._work.put(p)
        self._worker.start()
        if self.outbox:
            self.outbox.start()
        ae = AE(ae_title=self.s.ae_title)
        syntaxes = decodable_syntaxes()
        ae.supported_contexts = [build_context(sc.Verification)] + [build_context(c, syntaxes) for c in STORAGE]
        ae.maximum_associations = 16
        if self.s.allow:
            ae.require_calling_aet = list(self.s.allow)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, self._on_echo),
                    (evt.EVT_REJECTED, self._on_rejected), (evt.EVT_CONN_OPEN, nodelay)]
        self._server = ae.start_server((self.s.bind, self.s.port), block=False, evt_handlers=handlers,
                                       ssl_context=self._tls())
        self.port = self._server.server_address[1]
        log.info("listening on %s:%d as %s (%s)%s", self.s.bind, self.port, self.s.ae_title,
                 "TLS" if self.s.tls_cert else "no TLS",
                 f", calling AE titles allowed: {', '.join(self.s.allow)}" if self.s.allow else "")

    def stop(self) -> None:
        """Stop accepting, finish the image being analysed; what is still queued stays in incoming/."""
        if self._server is not None:
            self._server.shutdown()
        self._halt.set()
        self._work.put(None)
        self._worker.join(timeout=60)
        if self.outbox:
            self.outbox.stop()

    def _tls(self) -> ssl.SSLContext | None:
        if not self.s.tls_cert:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.s.tls_cert, self.s.tls_key)
        if self.s.tls_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.s.tls_ca)
        return ctx

    # -- the association's thread: store durably, acknowledge, hand over ---------------------------------------
    def _on_echo(self, event) -> int:
        log.info("C-ECHO from %s", _calling(event))
        return SUCCESS

    def _on_rejected(self, event) -> None:
        log.warning("association from %s refused (calling AE title not allowed)", _calling(event))

    def _on_store(self, event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID or "")
        if not UID.match(uid) or len(uid) > 64:
            log.warning("C-STORE from %s refused: the SOP Instance UID is not a valid UID", _calling(event))
            return 0xA900  # dataset does not match SOP class
        try:
            path = durable.write(self.dirs["incoming"], f"{uid}.dcm", event.encoded_dataset(include_meta=True))
        except OSError as e:
            log.error("C-STORE %s from %s not stored (%s); the sender is told to retry", uid, _calling(event),
                      e.strerror or type(e).__name__)
            return OUT_OF_RESOURCES
        log.info("received %s from %s", uid, _calling(event))
        self._work.put(path)
        return SUCCESS

    # -- the analysis thread -----------------------------------------------------------------------------------
    # Each image passes three stages, in order of arrival: decode (a worker process), inference (this thread,
    # which holds the model and its accelerator), the report (a worker process: building and writing one with
    # highdicom took 53 ms of a DX image's 76 in a profile, benchmarks/RESULTS.md). Then, in this thread, the
    # report joins the outbox, the record is appended, and only then is the image let go.
    def _analyse_loop(self) -> None:
        job = self._job
        ctx = multiprocessing.get_context("spawn")
        pool = worker_pool(self.s.workers, ctx, job) if self.s.workers > 0 else None
        decoding: collections.deque = collections.deque()  # (path, future of the decode)
        reporting: collections.deque = collections.deque()  # (path, record, future of the report)
        stopping = False
        try:
            while not (stopping and not decoding and not reporting):
                while not stopping and len(decoding) + len(reporting) < WINDOW:
                    if self._halt.is_set():
                        stopping = True  # what is still queued stays in incoming/ for the next start
                        break
                    try:
                        path = self._work.get(block=not (decoding or reporting), timeout=None if not (
                            decoding or reporting) else 0.02)
                    except queue.Empty:
                        break
                    if path is None:
                        stopping = True
                        self._work.task_done()
                    elif self._halt.is_set():
                        stopping = True
                        self._work.task_done()
                    elif pool is None:
                        self._one(path)
                    else:
                        decoding.append((path, pool.submit(decode_in_worker, str(path))))
                if pool is None:
                    continue
                futures = ([decoding[0][1]] if decoding else []) + ([reporting[0][2]] if reporting else [])
                concurrent.futures.wait(futures, timeout=0.05, return_when=concurrent.futures.FIRST_COMPLETED)
                try:
                    while decoding and decoding[0][1].done():
                        path, fut = decoding[0]
                        record = self._guarded(path, lambda: next(records(self.model, str(path), fut.result())))
                        decoding.popleft()
                        if record is not FAILED:
                            reporting.append((path, record, pool.submit(
                                _write_report, str(path), record, self.algorithm, str(self.dirs["reports"]))))
                    while reporting and reporting[0][2].done():
                        path, record, fut = reporting[0]
                        report = self._guarded(path, fut.result)
                        reporting.popleft()
                        if report is not FAILED:
                            self._finish(path, record, report)
                except BrokenProcessPool:
                    # A decoder crashed its worker: every image in flight goes again, each alone, so that the
                    # one that crashes is reported as unreadable and the rest as usual.
                    stop_pool(pool)
                    for path in [p for p, _ in decoding] + [p for p, *_ in reporting]:
                        self._one(path, isolated=True)
                    decoding.clear()
                    reporting.clear()
                    pool = worker_pool(self.s.workers, ctx, job)
        finally:
            if pool is not None:
                stop_pool(pool)

    def _guarded(self, path: Path, step):
        """``step()``, or FAILED after logging when it fails: one image's failure must never stop the node (the
        image stays in incoming/ for the next start). A crashed worker is the caller's to handle."""
        try:
            return step()
        except BrokenProcessPool:
            raise
        except Exception as e:
            log.error("analysing %s failed unexpectedly (%s); it stays in incoming/ for the next start",
                      path.stem, type(e).__name__)
            self._work.task_done()
            return FAILED

    def _one(self, path: Path, isolated: bool = False) -> None:
        """All three stages of one image in this thread (``workers=0``), or its decode alone in a fresh
        process after a crash."""
        try:
            if isolated:
                decoded = decode_isolated(str(path), self._job, multiprocessing.get_context("spawn"))
            else:
                decoded = decode(str(path), *self._job)
            record = next(records(self.model, str(path), decoded))
            report = _write_report(str(path), record, self.algorithm, str(self.dirs["reports"]))
        except Exception as e:  # one image's failure must never stop the node
            log.error("analysing %s failed unexpectedly (%s); it stays in incoming/ for the next start",
                      path.stem, type(e).__name__)
            self._work.task_done()
            return
        self._finish(path, record, report)

    def _finish(self, path: Path, record: dict, report_uid: str | None) -> None:
        uid = path.stem
        try:
            if report_uid is None:
                shutil.move(path, self.dirs["failed"] / path.name)
                durable.sync_folder(self.dirs["failed"])
                self._append({"sop_instance_uid": uid, "status": "error",
                              "error": "no readable DICOM header (patient, study), so no report can be attached"})
                log.error("%s could not be read at all; moved to failed/, no report", uid)
                return
            if self.outbox:
                self.outbox.add(self.dirs["reports"] / f"{report_uid}.dcm")
            result = {k: v for k, v in record.items() if k != "file"}
            self._append({"sop_instance_uid": uid, **result, "report": report_uid})
            path.unlink()
            durable.sync_folder(self.dirs["incoming"])
            what = (f"{record['label']} (score {record['score']:.4f})" if record["status"] == "ok" and
                    record.get("score") is not None else record["status"])
            log.info("reported %s: %s; report %s", uid, what, report_uid)
        finally:
            self._work.task_done()

    def _append(self, record: dict) -> None:
        with open(self.results, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _write_report(path: str, record: dict, algorithm: dict, reports: str) -> str | None:
    """Build the image's report and write it durably to ``reports``; its SOP Instance UID, or None when the
    image has no readable header to take the patient and study from. Runs in a worker process."""
    header = _header(Path(path))
    if header is None or not all(k in header for k in ("StudyInstanceUID", "SOPClassUID", "SOPInstanceUID")):
        return None
    report = sr.build(header, record, algorithm)
    buf = io.BytesIO()
    report.save_as(buf, enforce_file_format=True)
    durable.write(Path(reports), f"{report.SOPInstanceUID}.dcm", buf.getvalue())
    return str(report.SOPInstanceUID)


def _header(path: Path) -> pydicom.Dataset | None:
    try:
        with quiet_pydicom():
            return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # any parser failure: the header is unreadable
        return None


def _calling(event) -> str:
    return str(event.assoc.requestor.ae_title).strip() or "?"
