"""Reports waiting for the PACS: kept on disk, sent by C-STORE, retried with backoff, removed once delivered.
A report the PACS refuses for good moves to ``refused/`` beside the outbox, so that the ones after it still go."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless
from pynetdicom import AE, evt
from pynetdicom.sop_class import Comprehensive3DSRStorage, SecondaryCaptureImageStorage, SegmentationStorage
from pynetdicom.status import GENERAL_STATUS, STORAGE_SERVICE_CLASS_STATUS

from . import durable

log = logging.getLogger("medlite.serve")

FIRST_RETRY_S, LAST_RETRY_S = 1.0, 30.0
DELIVERED = {0x0000, 0xB000, 0xB006, 0xB007}  # success, or success with a warning (coercion, elements left out)


def transient(code: int) -> bool:
    """A refusal that may pass later: the PACS is out of resources (A7xx), at a resource limit (0213) or
    busy (0x0210, duplicate invocation: the same message still in progress)."""
    return 0xA700 <= code <= 0xA7FF or code in (0x0210, 0x0213)


def meaning(code: int) -> str:
    """The DICOM name of a C-STORE status, as PS3.4 and PS3.7 give it."""
    known = STORAGE_SERVICE_CLASS_STATUS.get(code) or GENERAL_STATUS.get(code)
    return known[1] if known else "a status PS3.4 does not define for storage"


@dataclass(frozen=True)
class Destination:
    host: str
    port: int
    ae_title: str

    @classmethod
    def parse(cls, text: str) -> "Destination":
        """HOST:PORT:AET, e.g. ``pacs.local:104:PACS``."""
        host, sep, rest = text.rpartition(":")
        host, sep2, port = host.rpartition(":")
        if not (sep and sep2 and host and port.isdigit() and 0 < int(port) < 65536 and 0 < len(rest) <= 16):
            raise ValueError(f"{text!r} is not HOST:PORT:AET (an AE title is 1 to 16 characters)")
        return cls(host, int(port), rest)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def nodelay(event) -> None:
    """Send each PDU at once. pynetdicom leaves Nagle's algorithm on, and a C-STORE's command and dataset,
    written one after the other, then wait for the peer's delayed acknowledgement: about 40 ms a message."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Outbox:
    """A folder of reports and a thread that delivers them. A report keeps its SOP Instance UID however often it
    is sent, so a PACS that receives one twice (a crash between sending and removing) keeps one copy."""

    def __init__(self, folder: Path, destination: Destination, ae_title: str, tls: ssl.SSLContext | None = None):
        self.folder = folder
        self.tls = tls
        self.refused = folder.parent / "refused"
        self.destination = destination
        self._ae = AE(ae_title=ae_title)
        self._ae.add_requested_context(Comprehensive3DSRStorage)
        self._ae.add_requested_context(SecondaryCaptureImageStorage)  # the heatmap over the image
        # The heatmap as a Segmentation, JPEG 2000 lossless as written; uncompressed for a PACS that takes no
        # JPEG 2000 (two contexts: a PACS accepts one transfer syntax in each).
        self._ae.add_requested_context(SegmentationStorage, [JPEG2000Lossless])
        self._ae.add_requested_context(SegmentationStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="medlite-outbox", daemon=True)

    def add(self, report: Path) -> None:
        """Queue a report already written durably elsewhere (a hard link, or a copy where links fail)."""
        target = self.folder / report.name
        try:
            if target.exists():
                target.unlink()
            os.link(report, target)
        except OSError:
            durable.write(self.folder, report.name, report.read_bytes())
        durable.sync_folder(self.folder)
        self._wake.set()

    def waiting(self) -> list[Path]:
        return sorted(self.folder.glob("*.dcm"), key=lambda p: p.stat().st_mtime)

    def start(self) -> None:
        waiting = len(self.waiting())
        if waiting:
            log.info("outbox: %d report(s) waiting for %s", waiting, self.destination)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        delay = FIRST_RETRY_S
        while not self._stopping.is_set():
            files = self.waiting()
            if not files:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            if self._deliver(files):
                delay = FIRST_RETRY_S
                continue
            log.warning("outbox: %s unreachable or busy; %d report(s) waiting, next try in %.0f s", self.destination,
                        len(files), delay)
            self._stopping.wait(delay)
            delay = min(delay * 2, LAST_RETRY_S)

    def _refuse(self, report: Path, reason: str) -> None:
        """Move a report the PACS will never take to ``refused/``, saying why, and go on with the rest."""
        self.refused.mkdir(exist_ok=True)
        os.replace(report, self.refused / report.name)
        durable.sync_folder(self.refused)
        durable.sync_folder(self.folder)
        log.error("outbox: %s refused report %s for good (%s); moved to %s, the others still go",
                  self.destination, report.stem, reason, self.refused)

    def _deliver(self, files: list[Path]) -> bool:
        """Send what is waiting over one association; True when every report was delivered."""
        d = self.destination
        assoc = self._ae.associate(d.host, d.port, ae_title=d.ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, nodelay)],
                                   tls_args=None if self.tls is None else (self.tls, d.host))
        if not assoc.is_established:
            return False
        try:
            for f in files:
                if self._stopping.is_set():
                    return True
                try:
                    status = _send(assoc, pydicom.dcmread(f))
                except ValueError as e:  # the PACS accepted no presentation context for this object
                    self._refuse(f, f"the association accepts no such object ({e})")
                    continue
                code = getattr(status, "Status", None)
                if code is None:  # the association broke or timed out
                    return False
                if code not in DELIVERED:
                    if transient(code):
                        log.warning("outbox: %s refused report %s for now (status 0x%04X, %s); kept for another "
                                    "try", d, f.stem, code, meaning(code))
                        return False
                    self._refuse(f, f"status 0x{code:04X}, {meaning(code)}")
                    continue
                f.unlink()
                durable.sync_folder(self.folder)
                log.info("forwarded report %s to %s", f.stem, d)
            return True
        finally:
            if assoc.is_established:
                assoc.release()


def _send(assoc, ds: pydicom.Dataset):
    """C-STORE ``ds`` as written, or uncompressed where the PACS accepted its kind of object but not its
    compression; ValueError where it accepted neither."""
    try:
        return assoc.send_c_store(ds)
    except ValueError:
        if not ds.file_meta.TransferSyntaxUID.is_compressed:
            raise
    ds.decompress()
    return assoc.send_c_store(ds)
