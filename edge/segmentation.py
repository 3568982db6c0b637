"""The heatmap as a DICOM Segmentation in the image's study, for software: the map itself, at the image's own
pixels, built with highdicom.

A Segmentation, not a Parametric Map: a Segmentation may be derived from an
image's pixel matrix alone, and the images a cart sends (projection X-rays,
ultrasound) have no frame of reference, which highdicom's Parametric Map needs
(it fails to build one from the chest DX). The segmentation is FRACTIONAL, so
that the map's values survive (8 bits, 255 the peak), of type PROBABILITY,
DICOM's nearer fit (OCCUPANCY means a share of a pixel's volume); its content
description says that the values are the class's evidence scaled to its peak,
not a calibrated probability. One segment: the class the map shows, by a local
code (scheme 99MEDLITE, as in the report), in the category "Morphologically
Abnormal Structure". Frames are JPEG 2000 lossless: a smooth map takes about a
twenty-fifth of its uncompressed size (42 KiB against 1,024 on the 1024x1024 DX,
146 against 3,515 on the 1841x1955 CR; benchmarks/heatmap_objects.py).

highdicom 0.28 builds a Segmentation of an image without a frame of reference
for a single frame only, so a cine gets none (its frames' heatmap pictures and
report still go). Its SOP Instance UID derives from the image and the model, as
the report's does.
"""

from __future__ import annotations

import warnings

import cv2
import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import JPEG2000Lossless, generate_uid

from .dicom import IMAGE, derived_header
from .sr import SCHEME, code_value
from .version import __version__

SERIES_NUMBER = 9903


def segmentation_uid(source_uid: str, model_sha256: str) -> str:
    return generate_uid(entropy_srcs=["medlite heatmap segmentation", source_uid, model_sha256])


def possible(header: pydicom.Dataset | None) -> bool:
    """Whether a Segmentation can be made of this image: one frame, its size known, no frame of reference."""
    return (header is not None and "Rows" in header and "Columns" in header
            and int(header.get("NumberOfFrames") or 1) == 1 and "FrameOfReferenceUID" not in header)


def build(source: pydicom.Dataset, heat: np.ndarray, label: str, algorithm: dict) -> hd.seg.Segmentation:
    """The Segmentation of ``heat`` (uint8, 255 the peak, at any size: it is scaled to the image's) over
    ``source`` (its header, with the elements edge/dicom.py's IMAGE names), showing class ``label``, for the
    algorithm named by ``algorithm`` (``name``, ``variant``, ``sha256``)."""
    rows, cols = int(source.Rows), int(source.Columns)
    values = cv2.resize(heat.astype(np.float32) / 255.0, (cols, rows), interpolation=cv2.INTER_LINEAR)
    image = derived_header(source)
    for k in IMAGE:
        if k in source:
            setattr(image, k, source[k].value)
    sha = algorithm["sha256"]
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=f"{label} heatmap"[:64],
        segmented_property_category=codes.cid7150.MorphologicallyAbnormalStructure,
        segmented_property_type=Code(code_value(label), SCHEME, label[:64] or "none"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=f"medlite {algorithm['name']}"[:64], family=codes.cid7162.ArtificialIntelligence,
            version=__version__, parameters={"variant": algorithm["variant"], "model SHA-256": sha}))
    with warnings.catch_warnings():  # highdicom's warnings about a name's format quote the name
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(
            source_images=[image], pixel_array=values[None], segmentation_type="FRACTIONAL",
            segment_descriptions=[segment],
            series_instance_uid=generate_uid(entropy_srcs=["medlite segmentation series", source.StudyInstanceUID,
                                                           sha]),
            series_number=SERIES_NUMBER, sop_instance_uid=segmentation_uid(source.SOPInstanceUID, sha),
            instance_number=1, manufacturer="medlite",
            manufacturer_model_name=f"{algorithm['name']} {algorithm['variant']}"[:64],
            software_versions=__version__, device_serial_number=sha[:16], fractional_type="PROBABILITY",
            content_label="HEATMAP",
            content_description=f"{label}: class evidence scaled to its peak, not a probability"[:64],
            transfer_syntax_uid=JPEG2000Lossless, omit_empty_frames=False)
    # Type 2C in the General Image module: the image's own orientation, else empty.
    seg.PatientOrientation = source.get("PatientOrientation", "")
    seg.SeriesDescription = f"medlite heatmap map {algorithm['name']} {algorithm['variant']}"[:64]
    return seg
