"""The heatmap as a DICOM object in the image's study: a Secondary Capture of the image in grey with the
heatmap in colour over it (what every viewer shows), built with highdicom from the image's header.

It is derived, not acquired (ImageType DERIVED\\SECONDARY), holds no text burnt into its pixels, and has a
series of its own per model in the study (SeriesDescription "medlite heatmap" and the model). Its SOP Instance
UID is derived from the image, the frame and the model, so one written again after a restart is the same
instance.
"""

from __future__ import annotations

import warnings

import highdicom as hd
import numpy as np
import pydicom
from pydicom.uid import generate_uid

from .dicom import derived_header

SERIES_NUMBER = 9902


def capture_uid(source_uid: str, model_sha256: str, frame: int | None) -> str:
    return generate_uid(entropy_srcs=["medlite heatmap", source_uid, model_sha256, str(frame)])


def build(source: pydicom.Dataset, picture_bgr: np.ndarray, algorithm: dict, frame: int | None = None
          ) -> hd.sc.SCImage:
    """The Secondary Capture of ``picture_bgr`` (the overlay, HxWx3 BGR as OpenCV draws it) in the study of
    ``source`` (its header is enough), for the algorithm named by ``algorithm`` (``name``, ``variant``,
    ``sha256``)."""
    sha = algorithm["sha256"]
    with warnings.catch_warnings():  # highdicom's warnings about a name's format quote the name
        warnings.simplefilter("ignore")
        image = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=derived_header(source), pixel_array=np.ascontiguousarray(picture_bgr[..., ::-1]),
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB, bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT, patient_orientation=("L", "F"),
            series_instance_uid=generate_uid(entropy_srcs=["medlite heatmap series", source.StudyInstanceUID, sha]),
            series_number=SERIES_NUMBER, sop_instance_uid=capture_uid(source.SOPInstanceUID, sha, frame),
            instance_number=1 + (frame or 0), manufacturer="medlite",
            series_description=f"medlite heatmap {algorithm['name']} {algorithm['variant']}"[:64])
    # The orientation the image's header gives, else empty (type 2): highdicom asks for one to build with.
    image.PatientOrientation = source.get("PatientOrientation", "")
    image.Laterality = source.get("Laterality", "")  # type 2C: empty where the image's header says nothing
    image.ImageType = ["DERIVED", "SECONDARY"]
    image.BurnedInAnnotation = "NO"
    image.DerivationDescription = (f"class activation map of {algorithm['name']} ({algorithm['variant']}) over the "
                                   f"image{'' if frame is None else f', frame {frame + 1}'}")[:1024]
    ref = pydicom.Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
    if frame is not None:
        ref.ReferencedFrameNumber = frame + 1
    ref.PurposeOfReferenceCodeSequence = [_code("121322", "DCM", "Source image for image processing operation")]
    image.SourceImageSequence = [ref]
    return image


def _code(value: str, scheme: str, meaning: str) -> pydicom.Dataset:
    code = pydicom.Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code
