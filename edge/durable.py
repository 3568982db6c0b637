"""Writing a file so that it survives a crash or power loss: a temporary name, fsync, rename, fsync the folder."""

from __future__ import annotations

import os
from pathlib import Path

TMP_PREFIX = ".tmp-"


def write(folder: Path, name: str, data: bytes) -> Path:
    """``folder/name`` holds ``data`` completely, on disk, or does not exist."""
    tmp = folder / f"{TMP_PREFIX}{name}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:  # a full disk, say: what was written of it is taken back at once, not at the next start
        tmp.unlink(missing_ok=True)
        raise
    final = folder / name
    os.replace(tmp, final)
    sync_folder(folder)
    return final


def sync_folder(folder: Path) -> None:
    """Make a rename, link or unlink in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def leftovers(folder: Path) -> list[Path]:
    """Temporary files of writes a crash interrupted: never complete, never acknowledged."""
    return sorted(folder.glob(f"{TMP_PREFIX}*"))
