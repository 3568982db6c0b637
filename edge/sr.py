"""A DICOM Structured Report of one analysed image, built with highdicom on TID 1500 (Measurement Report).

The report joins the source image's patient and study, references the image by
its SOP Instance UID, and holds one measurement group: the model's decision and
score at its operating point and whether the image lay within the training
distribution, or "not analysed" with the reason. Where the model made a heatmap,
the group is a planar ROI group (TID 1410), so that a viewer can draw it: its
image region is the heatmap's box, a closed POLYLINE on the source image (and
frame), and a POINT marks the heatmap's peak, both in the image's pixel
coordinates (DICOM's: 0,0 is the top-left corner of the top-left pixel). The algorithm is named by TID
4019 (name, version, parameters: variant, model SHA-256, the contract's
provenance, and the fingerprint of the key that signed the model where the
node runs only trusted models). The report is UNVERIFIED: no person has checked it.

Departures from TID 1500, as IHE AI Results allows for AI findings: the
decision, the score and the analysis status use local codes (scheme 99MEDLITE),
since a model's own labels have no standard code; the reason an image was not
analysed is a TEXT item in the measurement group.
"""

from __future__ import annotations

import warnings

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from .dicom import derived_header
from .version import __version__

SCHEME = "99MEDLITE"
MEASUREMENT_REPORT = Code("126000", "DCM", "Imaging Measurement Report")
IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging")
DEVICE = Code("121007", "DCM", "Device")
YES, NO = Code("373066001", "SCT", "Yes"), Code("373067005", "SCT", "No")
UNITLESS = Code("1", "UCUM", "no units")
DECISION = Code("decision", SCHEME, "Model decision")
SCORE = Code("score", SCHEME, "Model score")
OPERATING_POINT = Code("threshold", SCHEME, "Operating point")
IN_DISTRIBUTION = Code("in-distribution", SCHEME, "Within the training distribution")
STATUS = Code("status", SCHEME, "Analysis status")
ANALYSED = Code("analysed", SCHEME, "Analysed")
NOT_ANALYSED = Code("not-analysed", SCHEME, "Not analysed: outside the intended use")
UNREADABLE = Code("unreadable", SCHEME, "Not analysed: the image could not be read")
REASON = Code("reason", SCHEME, "Reason not analysed")
PEAK = Code("heatmap-peak", SCHEME, "Heatmap peak")
SOURCE = Code("121112", "DCM", "Source of Measurement")


def report_uid(source_uid: str, model_sha256: str) -> str:
    """The report's SOP Instance UID, derived from the image and the model: a report written again after a
    restart, or sent again, is the same instance, so a PACS that receives it twice keeps one."""
    return generate_uid(entropy_srcs=["medlite structured report", source_uid, model_sha256])


def build(source: pydicom.Dataset, records: list[dict], algorithm: dict, captures=()) -> hd.sr.Comprehensive3DSR:
    """The report for ``source`` (its header is enough) from its medlite records (``ok``, ``rejected`` or
    ``error``; one per frame of a cine under the frame policy 'all', one measurement group each) and the
    algorithm's identity (``name``, ``variant``, ``sha256``, ``provenance``); ``captures``, the heatmap objects
    made of it (edge/capture.py, edge/segmentation.py), are listed in its evidence."""
    # highdicom's warnings about a name's format quote the name: never on a console or in a log.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _build(source, records, algorithm, captures)


def _build(source: pydicom.Dataset, records: list[dict], algorithm: dict, captures) -> hd.sr.Comprehensive3DSR:
    sha = algorithm["sha256"]
    ident = hd.sr.AlgorithmIdentification(
        name=f"medlite {algorithm['name']}", version=__version__,
        parameters=[f"variant {algorithm['variant']}", f"model SHA-256 {sha}",
                    f"contract provenance {algorithm['provenance']}"]
        + ([f"signed by key {algorithm['signed_by']}"] if algorithm.get("signed_by") else []))
    groups = [_group(source, record, ident, sha) for record in records]
    observer = hd.sr.ObserverContext(
        observer_type=DEVICE,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["medlite device", sha]), name="medlite", manufacturer_name="medlite",
            model_name=f"{algorithm['name']} {algorithm['variant']}"[:64], serial_number=sha[:16]))
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=IMAGING_PROCEDURE, imaging_measurements=groups, title=MEASUREMENT_REPORT)
    return hd.sr.Comprehensive3DSR(
        evidence=[derived_header(source), *(derived_header(c) for c in captures)], content=content[0],
        series_instance_uid=generate_uid(entropy_srcs=["medlite series", source.StudyInstanceUID, sha]),
        series_number=9901, sop_instance_uid=report_uid(source.SOPInstanceUID, sha), instance_number=1,
        manufacturer="medlite", is_complete=True, is_verified=False,
        series_description=f"medlite {algorithm['name']} {algorithm['variant']}"[:64])


def _group(source: pydicom.Dataset, record: dict, ident, sha: str):
    """One record's measurement group, on its image (and frame); a planar ROI group with the heatmap's box and
    peak where the record has them."""
    frame = record.get("frame")
    frames = None if frame is None else [int(frame) + 1]
    tracking = ["tracking", source.SOPInstanceUID, sha] + ([] if frame is None else [str(frame)])
    common = {"tracking_identifier": hd.sr.TrackingIdentifier(uid=generate_uid(entropy_srcs=tracking),
                                                               identifier="medlite finding"),
              "algorithm_id": ident, "measurements": _measurements(record),
              "qualitative_evaluations": _evaluations(record)}
    if record.get("box") is not None:
        x0, y0, x1, y1 = (float(v) for v in record["box"])
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32),
            source_image=hd.sr.SourceImageForRegion(source.SOPClassUID, source.SOPInstanceUID, frames))
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=region, **common)
        group[0].ContentSequence.append(_peak(source, record["peak"], frames))
    else:
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            source_images=[hd.sr.SourceImageForMeasurementGroup(source.SOPClassUID, source.SOPInstanceUID, frames)],
            **common)
    reason = record.get("reason") or record.get("error")
    if reason:
        group[0].ContentSequence.append(hd.sr.TextContentItem(
            name=REASON, value=reason[:1024], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    return group


def _peak(source: pydicom.Dataset, peak, frames) -> hd.sr.ScoordContentItem:
    """The heatmap's peak as a POINT at its pixel's centre, selected from the source image (and frame)."""
    x, y = peak
    point = hd.sr.ScoordContentItem(name=PEAK, graphic_type=hd.sr.GraphicTypeValues.POINT,
                                    graphic_data=np.array([[x + 0.5, y + 0.5]], dtype=np.float32),
                                    relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    point.ContentSequence = [hd.sr.ImageContentItem(
        name=SOURCE, referenced_sop_class_uid=source.SOPClassUID, referenced_sop_instance_uid=source.SOPInstanceUID,
        referenced_frame_numbers=frames, relationship_type=hd.sr.RelationshipTypeValues.SELECTED_FROM)]
    return point


def _measurements(record: dict) -> list[hd.sr.Measurement]:
    if record["status"] != "ok" or record.get("score") is None:
        return []
    out = [hd.sr.Measurement(name=SCORE, value=float(record["score"]), unit=UNITLESS)]
    if record.get("threshold") is not None:
        out.append(hd.sr.Measurement(name=OPERATING_POINT, value=float(record["threshold"]), unit=UNITLESS))
    return out


def _evaluations(record: dict) -> list[hd.sr.QualitativeEvaluation]:
    status = record["status"]
    if status == "rejected":
        return [hd.sr.QualitativeEvaluation(STATUS, NOT_ANALYSED)]
    if status != "ok":
        return [hd.sr.QualitativeEvaluation(STATUS, UNREADABLE)]
    out = [hd.sr.QualitativeEvaluation(STATUS, ANALYSED),
           hd.sr.QualitativeEvaluation(DECISION, Code(code_value(record["label"]), SCHEME, record["label"]))]
    if record.get("in_distribution") is not None:
        out.append(hd.sr.QualitativeEvaluation(IN_DISTRIBUTION, YES if record["in_distribution"] else NO))
    return out


def code_value(label: str) -> str:
    """A label as a DICOM code value (SH: at most 16 characters, no backslash)."""
    return label.replace("\\", "/")[:16] or "none"
