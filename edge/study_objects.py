"""The DICOM objects the node writes of an analysed image, in the image's study, each durably to reports/: its
report (edge/sr.py), and its heatmap as a picture (edge/capture.py) and as a Segmentation
(edge/segmentation.py)."""

from __future__ import annotations

import io
from pathlib import Path

from . import capture, durable, segmentation, sr


def write_report(header, recs: list[dict], algorithm: dict, reports: Path, evidence=()) -> str | None:
    """Build the image's report from its header (as the decode read it), listing its heatmap objects
    (``evidence``), and write it durably to ``reports``; its SOP Instance UID, or None when the image has no
    readable header to take the patient and study from."""
    if header is None or not all(k in header for k in ("StudyInstanceUID", "SOPClassUID", "SOPInstanceUID")):
        return None
    report = sr.build(header, recs, algorithm, evidence)
    _save(report, reports)
    return str(report.SOPInstanceUID)


def write_pictures(header, pictures: dict, algorithm: dict, reports: Path) -> dict:
    """Each frame's heatmap over the image as a Secondary Capture in the image's study, written to ``reports``;
    by frame, as ``pictures`` is."""
    if header is None or not pictures or "StudyInstanceUID" not in header:
        return {}
    captures = {frame: capture.build(header, picture, algorithm, frame) for frame, picture in pictures.items()}
    for c in captures.values():
        _save(c, reports)
    return captures


def write_segmentation(header, maps: dict, algorithm: dict, reports: Path) -> dict:
    """The heatmap as a Segmentation in the image's study, written to ``reports`` (by frame, as ``maps`` is),
    where one can be made (edge/segmentation.py: a single-frame image)."""
    if None not in maps or not segmentation.possible(header) or "StudyInstanceUID" not in header:
        return {}
    heat, label = maps[None]
    seg = segmentation.build(header, heat, label, algorithm)
    _save(seg, reports)
    return {None: seg}


def _save(ds, folder: Path) -> None:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    durable.write(folder, f"{ds.SOPInstanceUID}.dcm", buf.getvalue())
