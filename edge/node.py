"""The cart as a DICOM node: images in by C-STORE, one Structured Report out per image (and its heatmap as a
picture and a Segmentation: edge/study_objects.py), forwarded to the PACS.

An image is on disk (temporary name, fsync, rename) before its C-STORE
response says success; the model runs on its own thread, so a slow model never
stalls a sender; a report is on disk before its image is let go. A crash at any
moment therefore loses nothing that was acknowledged: on start the node
finishes every image still in ``incoming/``, and the outbox keeps every report
that the PACS has not confirmed.

OUT/incoming/  images acknowledged and not yet reported (SOP Instance UID.dcm)
OUT/reports/   every report written (its own SOP Instance UID.dcm)
OUT/outbox/    reports not yet delivered to --forward (links into reports/)
OUT/failed/    files that hold no readable DICOM header, so no report can name their patient, and images whose
               analysis failed --give-up-after times
OUT/results.jsonl  one medlite record per image, with the report's UID

Log lines name SOP Instance UIDs and AE titles, never patient data.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import queue
import re
import shutil
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from pynetdicom import AE, evt
from pynetdicom import sop_class as sc
from pynetdicom.presentation import build_context

from . import durable, study_objects
from .batch import job_of, records
from .engine import Decoded, Engine
from .heatmap import overlay
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
PICTURE_SIDE = 512  # the heatmap's picture in the study: the image at most this many pixels on its longer side
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
_LIBC = ctypes.CDLL(None) if os.name == "posix" else None  # the C library the process runs on
DISK_FULL_RETRY_S = 10.0  # with OUT full, an image's analysis is tried again this often


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
    forward_tls_ca: str | None = None  # with it, reports go to the PACS over TLS, its certificate checked
    forward_tls_cert: str | None = None  # the client certificate shown to the PACS (default: tls_cert)
    forward_tls_key: str | None = None
    workers: int = 2  # processes that decode images (0: the analysis thread decodes too)
    give_up_after: int = 3  # an image whose analysis fails this many times (across restarts) goes to failed/
    heatmap: bool = True  # where the model can: each report holds the heatmap's peak and box on the image


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
        self._pictures = settings.heatmap and model.has_heatmap  # the heatmap on the image, in the report
        self._job = job_of(model, PICTURE_SIDE if self._pictures else 0)
        prov = model.contract.provenance
        self.algorithm = {
            "name": f"{prov.get('family', 'model')} {prov.get('training_data', '')}".strip(),
            "variant": prov.get("variant", "?"), "sha256": model.sha256,
            "provenance": ", ".join(f"{k} {v}" for k, v in sorted(prov.items()) if k not in ("variant",)),
            "signed_by": model.signed_by,
        }
        self.outbox = (Outbox(self.dirs["outbox"], settings.forward, settings.ae_title, self._forward_tls())
                       if settings.forward else None)

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

    def _forward_tls(self) -> ssl.SSLContext | None:
        """TLS to the PACS: its certificate checked against forward_tls_ca (and its host name), and this node's
        client certificate shown where it has one."""
        if not self.s.forward_tls_ca:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.s.forward_tls_ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        cert = self.s.forward_tls_cert or self.s.tls_cert
        if cert:
            ctx.load_cert_chain(cert, self.s.forward_tls_key or self.s.tls_key)
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
    # Images are decoded by the decode engine's worker processes, a window ahead, in order of arrival; this
    # thread, which holds the model and its accelerator, runs inference and builds the report from the header
    # the decode read. Then the report joins the outbox, the records are appended, and only then is the image
    # let go.
    def _analyse_loop(self) -> None:
        with Engine(self._job, self.s.workers) as engine:
            stopping, busy = False, False
            while not stopping or len(engine):
                while not stopping and not engine.full():
                    if self._halt.is_set():
                        stopping = True  # what is still queued stays in incoming/ for the next start
                        break
                    if busy and not len(engine) and self._work.empty():  # a burst is over: idle from here
                        _give_back_freed_memory()
                        busy = False
                    try:  # wait for work only when there is nothing to finish meanwhile
                        path = self._work.get(timeout=0.02 if len(engine) else None)
                    except queue.Empty:
                        break
                    if path is None or self._halt.is_set():
                        stopping = True
                    else:
                        engine.submit(str(path))
                decoded = engine.next(timeout=0.05)
                if decoded is None:
                    continue
                busy = True
                try:
                    self._analyse(Path(decoded.file), decoded)
                except Exception as e:  # this thread must live on, or the node takes images it never reports
                    log.error("analysing %s stopped unexpectedly (%s); it stays in incoming/ for the next start",
                              Path(decoded.file).stem, type(e).__name__)

    def _analyse(self, path: Path, decoded: Decoded) -> None:
        """Infer, report and let go of one decoded image. Its failure never stops the node: the image stays in
        incoming/ for the next start, until it has failed ``give_up_after`` times. A full disk is no failure of
        the image's: it waits in incoming/ until there is room (images sent meanwhile are refused with "out of
        resources", so their senders keep them)."""
        try:
            self._analyse_once(path, decoded)
        except OSError as e:
            if not _disk_full(e):
                raise
            log.error("%s is full (%s): the report of %s is not written; it stays in incoming/ and is tried again "
                      "in %.0f s", self.s.out, e.strerror, path.stem, DISK_FULL_RETRY_S)
            if not self._halt.wait(DISK_FULL_RETRY_S):
                self._work.put(path)

    def _analyse_once(self, path: Path, decoded: Decoded) -> None:
        """Report the image and let it go, or count a failed analysis; a full disk is raised, not counted."""
        try:
            recs, report, made = self._report(decoded)
        except Exception as e:
            if _disk_full(e):
                raise
            self._analysis_failed(path, decoded, type(e).__name__)
            return
        path.with_suffix(".failures").unlink(missing_ok=True)
        self._finish(path, recs, report, made)

    def _report(self, decoded: Decoded) -> tuple[list[dict], str | None, dict]:
        """The image's records (one per frame under the frame policy 'all'), and its report and heatmap objects,
        written to reports/: (records, the report's UID, {kind: {frame: object}})."""
        pictures, maps = {}, {}  # each analysed frame's heatmap, over the image and as values (frame None: one)

        def draw(rec, prediction, frame):
            pictures[rec.get("frame")] = overlay(frame.pixels, prediction.heatmap)
            maps[rec.get("frame")] = (prediction.heatmap, prediction.heatmap_label)

        recs = list(records(self.model, decoded, draw if self._pictures else None))
        header, reports = decoded.header, self.dirs["reports"]
        made = {"heatmap_image": study_objects.write_pictures(header, pictures, self.algorithm, reports),
                "heatmap_segmentation": study_objects.write_segmentation(header, maps, self.algorithm, reports)}
        evidence = [o for objects in made.values() for o in objects.values()]
        report = study_objects.write_report(header, recs, self.algorithm, reports, evidence)
        return recs, report, made

    def _analysis_failed(self, path: Path, decoded: Decoded, error: str) -> None:
        """Count a failed analysis (durably, so restarts count too); the last one allowed sets the image aside
        in failed/ with a report saying that it could not be analysed, where a report can still be written."""
        uid, counter = path.stem, path.with_suffix(".failures")
        tries = (int(counter.read_text()) if counter.exists() else 0) + 1
        if tries < self.s.give_up_after:
            durable.write(self.dirs["incoming"], counter.name, str(tries).encode())
            log.error("analysing %s failed unexpectedly (%s, try %d of %d); it stays in incoming/ for the next start",
                      uid, error, tries, self.s.give_up_after)
            return
        recs = [{"file": str(path), "status": "error", "error": f"could not be analysed: {tries} tries failed "
                                                               f"({error})"}]
        try:
            report = study_objects.write_report(decoded.header, recs, self.algorithm, self.dirs["reports"])
        except Exception:  # the header itself is what fails (an invalid date, a code no report may hold)
            report = None
        shutil.move(path, self.dirs["failed"] / path.name)
        durable.sync_folder(self.dirs["failed"])
        counter.unlink(missing_ok=True)
        durable.sync_folder(self.dirs["incoming"])
        if report and self.outbox:
            self.outbox.add(self.dirs["reports"] / f"{report}.dcm")
        self._append([{"sop_instance_uid": uid, **{k: v for k, v in recs[0].items() if k != "file"}, "report": report}])
        log.error("analysing %s failed %d times (%s); moved to failed/, %s", uid, tries, error,
                  f"report {report} says it could not be analysed" if report else "and no report could be written")

    def _finish(self, path: Path, recs: list[dict], report_uid: str | None, made: dict) -> None:
        uid = path.stem
        if report_uid is None:
            shutil.move(path, self.dirs["failed"] / path.name)
            durable.sync_folder(self.dirs["failed"])
            self._append([{"sop_instance_uid": uid, "status": "error",
                           "error": "no readable DICOM header (patient, study), so no report can be attached"}])
            log.error("%s could not be read at all; moved to failed/, no report", uid)
            return
        if self.outbox:
            for objects in made.values():  # the heatmaps first: the report that references them comes after
                for o in objects.values():
                    self.outbox.add(self.dirs["reports"] / f"{o.SOPInstanceUID}.dcm")
            self.outbox.add(self.dirs["reports"] / f"{report_uid}.dcm")
        # Each record names its frame's heatmap objects, where they were made.
        self._append([{"sop_instance_uid": uid, **{k: v for k, v in r.items() if k != "file"}, "report": report_uid,
                       **{kind: str(objects[r.get("frame")].SOPInstanceUID) for kind, objects in made.items()
                          if r.get("frame") in objects}}
                      for r in recs])
        path.unlink()
        durable.sync_folder(self.dirs["incoming"])
        first = recs[0]
        what = (f"{first['label']} (score {first['score']:.4f})" if first["status"] == "ok" and
                first.get("score") is not None else first["status"])
        log.info("reported %s: %s%s; report %s", uid, what,
                 f" and {len(recs) - 1} more frame(s)" if len(recs) > 1 else "", report_uid)

    def _append(self, recs: list[dict]) -> None:
        """Append whole lines, or nothing: a write cut short (a full disk) is taken back, and the image, still in
        incoming/, is recorded when it is analysed again."""
        data = "".join(json.dumps(r) + "\n" for r in recs).encode()
        fd = os.open(self.results, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            try:
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, end)
                raise
        finally:
            os.close(fd)


def _give_back_freed_memory() -> None:
    """Return the heap's free pages to the system (glibc's malloc_trim). glibc keeps what a large image's
    heatmap objects freed (a 3.6-megapixel CR's: some 60 MB) for reuse, so without this the node would stay at
    its burst's peak long after it (benchmarks/RESULTS.md). Elsewhere (musl, macOS) nothing is done."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def _calling(event) -> str:
    return str(event.assoc.requestor.ae_title).strip() or "?"
