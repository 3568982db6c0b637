"""Reports waiting for the PACS: kept on disk, sent by C-STORE, retried with backoff, removed once delivered."""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pynetdicom import AE, evt
from pynetdicom.sop_class import Comprehensive3DSRStorage

from . import durable

log = logging.getLogger("medlite.serve")

FIRST_RETRY_S, LAST_RETRY_S = 1.0, 30.0


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

    def __init__(self, folder: Path, destination: Destination, ae_title: str):
        self.folder = folder
        self.destination = destination
        self._ae = AE(ae_title=ae_title)
        self._ae.add_requested_context(Comprehensive3DSRStorage)
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
            log.warning("outbox: %s unreachable; %d report(s) waiting, next try in %.0f s", self.destination,
                        len(files), delay)
            self._stopping.wait(delay)
            delay = min(delay * 2, LAST_RETRY_S)

    def _deliver(self, files: list[Path]) -> bool:
        """Send what is waiting over one association; True when every report was delivered."""
        d = self.destination
        assoc = self._ae.associate(d.host, d.port, ae_title=d.ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, nodelay)])
        if not assoc.is_established:
            return False
        try:
            for f in files:
                if self._stopping.is_set():
                    return True
                status = assoc.send_c_store(pydicom.dcmread(f))
                code = getattr(status, "Status", None)
                if code is None:  # the association broke or timed out
                    return False
                if code not in (0x0000, 0xB000, 0xB007, 0xB006):  # success, or success with a warning
                    log.warning("outbox: %s refused report %s (status 0x%04X); kept for another try", d, f.stem,
                                code)
                    return False
                f.unlink()
                durable.sync_folder(self.folder)
                log.info("forwarded report %s to %s", f.stem, d)
            return True
        finally:
            if assoc.is_established:
                assoc.release()
