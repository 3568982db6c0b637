"""The model contract: everything needed to run a .tflite model correctly, carried inside the file.

The contract is JSON stored as a metadata entry named ``medlite.contract`` in
the flatbuffer, so a model file alone is enough on a cart: its input, how
pixels become that input, its labels and operating point, and where it came from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from .errors import ModelError
from .tflite_file import digest_outside, metadata_spans

log = logging.getLogger("medlite")

METADATA_NAME = "medlite.contract"
SCHEMA = 1
INTERPOLATIONS = ("area", "linear", "cubic", "nearest")
COLORS = ("grey", "rgb")
VOI_POLICIES = ("file", "minmax")
ACTIVATIONS = ("none", "softmax")
CROPS = ("center", "none")


@dataclass(frozen=True)
class InputSpec:
    """The model's input tensor, one image at a time (batch 1)."""

    height: int
    width: int
    channels: int  # 1 (grey) or 3 (RGB)
    dtype: str = "float32"  # float32, int8 or uint8
    scale: float | None = None  # quantized input only: real = scale * (q - zero_point)
    zero_point: int | None = None


@dataclass(frozen=True)
class Preprocess:
    """How a decoded image (display values 0..255, HxWxC) becomes the model's input."""

    color: str = "grey"  # the model's colour space; colour images become grey by luminance
    crop: str = "center"  # "center": crop to a square first, as MedMNIST made its images
    interpolation: str = "area"  # OpenCV resize interpolation
    mean: tuple[float, ...] = (0.0,)  # after scaling to 0..1: (x - mean) / std per channel
    std: tuple[float, ...] = (1.0,)
    voi: str = "file"  # DICOM: "file" uses the file's VOI LUT / window, else min-max; "minmax" always
    invert_monochrome1: bool = True  # MONOCHROME1 (white is low) is inverted so bone is bright
    frames: str | int = "middle"  # multi-frame DICOM: "middle", "all", or a frame index


@dataclass(frozen=True)
class IntendedUse:
    """What the model was validated on, checked against each DICOM's own tags before it is decoded.

    An empty list allows anything; a tag the file does not have is not a mismatch (the out-of-distribution
    guard still sees the image).
    """

    modalities: tuple[str, ...] = ()  # DICOM Modality values, e.g. ("CR", "DX")
    body_parts: tuple[str, ...] = ()  # DICOM BodyPartExamined values, e.g. ("CHEST",)
    description: str = ""  # in words, e.g. "paediatric chest X-ray"
    # The patients' ages the model was validated on, in years (inclusive; fractions for months), or None.
    age_years: tuple[float, float] | None = None
    # A DICOM that gives no age where an age range is set: "reject" it (it cannot be checked), or "answer" it
    # with its record marked. A cautious product rejects: an adult film without an age looks like a child's.
    if_age_missing: str = "reject"
    view_positions: tuple[str, ...] = ()  # DICOM ViewPosition values, e.g. ("AP", "PA"): frontal films only

    def violation(self, modality: str | None, body_part: str | None, view: str | None = None) -> str | None:
        """Why a file with these tags is outside the intended use; None when it is not."""
        if self.modalities and modality and modality.strip().upper() not in self.modalities:
            return (f"modality {modality.strip()} is not among this model's intended inputs "
                    f"({', '.join(self.modalities)})")
        if self.body_parts and body_part and body_part.strip().upper() not in self.body_parts:
            return (f"body part {body_part.strip()} is not among this model's intended inputs "
                    f"({', '.join(self.body_parts)})")
        if self.view_positions and view and view.strip().upper() not in self.view_positions:
            return (f"view position {view.strip()} is not among this model's intended inputs "
                    f"({', '.join(self.view_positions)})")
        return None

    def age_violation(self, age_years: float | None) -> str | None:
        """Why an image of a patient of this age (None: the file gives none) is outside the intended use; None
        when it is not, or when the intended use names no ages."""
        if self.age_years is not None:
            if age_years is None and self.if_age_missing == "reject":
                return (f"the file gives no patient age (PatientAge, or PatientBirthDate with StudyDate or "
                        f"AcquisitionDate), so it cannot be checked against this model's intended use "
                        f"({age_range_text(self.age_years)})")
            if age_years is not None and not self.age_years[0] <= age_years <= self.age_years[1]:
                return (f"patient age {age_text(age_years)} is outside this model's intended use "
                        f"({age_range_text(self.age_years)})")
        return None

    def describe(self) -> str:
        rules = [f"modality {', '.join(self.modalities)}" if self.modalities else "",
                 f"body part {', '.join(self.body_parts)}" if self.body_parts else "",
                 f"view position {', '.join(self.view_positions)}" if self.view_positions else "",
                 f"patient age {age_range_text(self.age_years)}, a DICOM without an age "
                 f"{'rejected' if self.if_age_missing == 'reject' else 'answered and marked'}"
                 if self.age_years is not None else ""]
        text = "; ".join(r for r in rules if r) or "no DICOM rules"
        return f"{text} ({self.description})" if self.description else text


def age_text(years: float) -> str:
    """An age as a person says it: months under two years, else whole years."""
    if years < 2:
        months = years * 12
        return f"{months:.0f} months" if abs(months - round(months)) < 0.05 else f"{months:.1f} months"
    return f"{int(years)} years"


def age_range_text(ages: tuple[float, float]) -> str:
    """A range in months when it ends under two years, else in years (its start in months when not whole)."""
    lo, hi = ages
    if hi < 2:
        return f"{lo * 12:g} to {hi * 12:g} months"
    return f"{lo:g} to {hi:g} years" if lo == int(lo) else f"{age_text(lo)} to {hi:g} years"


@dataclass(frozen=True)
class Contract:
    """What a model promises and needs; see DESIGN.md, 'The model contract'."""

    input: InputSpec
    labels: tuple[str, ...]
    preprocess: Preprocess = field(default_factory=Preprocess)
    # "softmax": the model ends in logits and the runtime applies softmax in float, so that an integer model's
    # scores keep their ranking (a quantized softmax leaves a few dozen distinct values); "none": the outputs
    # are the scores already (a variant computing in float keeps its own float softmax, and models written
    # before medlite exported logits).
    activation: str = "none"
    intended_use: IntendedUse = field(default_factory=IntendedUse)
    scores_output: int = 0  # which of the model's outputs holds the class scores (or logits)
    features_output: int | None = None  # which holds the penultimate features, when the model gives them
    ood: dict[str, Any] = field(default_factory=dict)  # the out-of-distribution detector (edge/ood.py), if fitted
    # How a heatmap is made (edge/heatmap.py): which output holds the last feature map and the classifier head's
    # float weights; empty for a model whose head is not global average pooling then dense layers.
    heatmap: dict[str, Any] = field(default_factory=dict)
    positive_index: int | None = None  # binary models: the class whose score meets the threshold
    threshold: float | None = None  # operating point chosen on validation data for this variant
    operating_point: str = ""  # how the threshold was chosen, e.g. "sensitivity>=0.95"
    # A multi-class model's decision, chosen on validation for this variant (train/calibration.py):
    # {"method": ..., "weights": [one per label]}; the decided class has the highest score times its weight.
    # Empty: the highest score.
    calibration: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)  # version, variant, hashes
    validation: dict[str, Any] = field(default_factory=dict)  # metrics measured at conversion
    # Digests written at conversion: "content_sha256" of the file with this contract's bytes counted as zeros
    # (weights and graph), "contract_sha256" of the rest of this contract; load() refuses a file that differs.
    integrity: dict[str, str] = field(default_factory=dict)
    schema: int = SCHEMA

    @property
    def positive_label(self) -> str | None:
        return None if self.positive_index is None else self.labels[self.positive_index]

    def replace(self, **changes) -> "Contract":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], file: str | None = None) -> "Contract":
        try:
            if d.get("schema", SCHEMA) > SCHEMA:
                raise ValueError(f"contract schema {d['schema']} is newer than this medlite understands "
                                 f"({SCHEMA}); upgrade medlite")
            inp = InputSpec(**d["input"])
            pre = dict(d.get("preprocess", {}))
            for key in ("mean", "std"):
                if key in pre:
                    pre[key] = tuple(float(v) for v in pre[key])
            pre = Preprocess(**pre)
            c = cls(
                input=inp,
                labels=tuple(str(x) for x in d["labels"]),
                preprocess=pre,
                activation=d.get("activation", "none"),
                scores_output=int(d.get("scores_output", 0)),
                features_output=d.get("features_output"),
                ood=dict(d.get("ood", {})),
                heatmap=dict(d.get("heatmap", {})),
                intended_use=intended_use_from(d.get("intended_use", {})),
                positive_index=d.get("positive_index"),
                threshold=d.get("threshold"),
                operating_point=d.get("operating_point", ""),
                calibration=dict(d.get("calibration", {})),
                provenance=dict(d.get("provenance", {})),
                validation=dict(d.get("validation", {})),
                integrity=dict(d.get("integrity", {})),
                schema=d.get("schema", SCHEMA),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(file, f"the medlite contract is malformed ({e})") from None
        c.check(file)
        return c

    def check(self, file: str | None = None) -> None:
        """Reject a contract that could not be applied, before any image is seen."""
        inp, pre = self.input, self.preprocess
        problems = []
        if inp.channels not in (1, 3):
            problems.append(f"input channels must be 1 or 3, got {inp.channels}")
        if inp.height < 1 or inp.width < 1:
            problems.append(f"input size must be positive, got {inp.height}x{inp.width}")
        if inp.dtype not in ("float32", "int8", "uint8"):
            problems.append(f"input dtype must be float32, int8 or uint8, got {inp.dtype}")
        if pre.color not in COLORS or (pre.color == "grey") != (inp.channels == 1):
            problems.append(f"colour {pre.color!r} does not match {inp.channels} input channel(s)")
        if pre.interpolation not in INTERPOLATIONS:
            problems.append(f"interpolation must be one of {INTERPOLATIONS}, got {pre.interpolation!r}")
        if pre.crop not in CROPS:
            problems.append(f"crop must be one of {CROPS}, got {pre.crop!r}")
        if pre.voi not in VOI_POLICIES:
            problems.append(f"voi must be one of {VOI_POLICIES}, got {pre.voi!r}")
        if len(pre.mean) not in (1, inp.channels) or len(pre.std) not in (1, inp.channels):
            problems.append("mean and std must have one value or one per channel")
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if len(self.labels) < 2:
            problems.append("a classifier needs at least two labels")
        weights = self.calibration.get("weights")
        if weights is not None and (len(weights) != len(self.labels) or not all(
                isinstance(w, (int, float)) and w > 0 for w in weights)):
            problems.append(f"calibration weights must be {len(self.labels)} positive numbers, one per label")
        ages, use = self.intended_use.age_years, self.intended_use
        if ages is not None and not 0 <= ages[0] <= ages[1]:
            problems.append(f"intended age range must be 0 <= min <= max, got {ages}")
        if use.if_age_missing not in ("reject", "answer"):
            problems.append(f"if_age_missing must be 'reject' or 'answer', got {use.if_age_missing!r}")
        if self.positive_index is not None and not 0 <= self.positive_index < len(self.labels):
            problems.append(f"positive_index {self.positive_index} is not a label index")
        if problems:
            raise ModelError(file, "the medlite contract is invalid: " + "; ".join(problems))


def intended_use_from(d: dict[str, Any]) -> IntendedUse:
    ages = d.get("age_years")
    return IntendedUse(modalities=tuple(str(x).upper() for x in d.get("modalities", ())),
                       body_parts=tuple(str(x).upper() for x in d.get("body_parts", ())),
                       description=str(d.get("description", "")),
                       age_years=None if ages is None else (float(ages[0]), float(ages[1])),
                       if_age_missing=str(d.get("if_age_missing", "reject")),
                       view_positions=tuple(str(x).upper() for x in d.get("view_positions", ())))


def contract_digest(d: dict[str, Any]) -> str:
    """SHA-256 of a contract's content apart from its integrity entry, in a canonical JSON form."""
    rest = {k: v for k, v in d.items() if k != "integrity"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_contract(model: bytes, file: str | None = None) -> Contract:
    """The contract inside a .tflite file's bytes, its digests verified; ModelError when there is none,
    or when the file is not the one the contract was written into."""
    spans = metadata_spans(model, file)
    if METADATA_NAME not in spans:
        raise ModelError(file, "this .tflite has no medlite contract (no 'medlite.contract' metadata), so "
                               "medlite cannot know its preprocessing, labels or threshold; produce the model "
                               "with `medlite convert` (or `medlite demo`) instead of another converter")
    start, end = spans[METADATA_NAME]
    try:
        d = json.loads(model[start:end].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(file, f"the medlite contract is not valid JSON ({e}); the file was damaged") from None
    if not isinstance(d, dict):
        raise ModelError(file, "the medlite contract is not a JSON object; the file was damaged")
    contract = Contract.from_dict(d, file)
    digests = contract.integrity
    size = digests.get("file_size")
    if size is not None and str(size).isdigit() and int(size) != len(model):
        raise ModelError(file, f"the file is truncated: {len(model)} of its {int(size)} bytes; re-copy the model"
                         if len(model) < int(size) else
                         f"the file has {len(model) - int(size)} bytes more than were written; re-copy the model")
    if not digests:
        log.warning("%s: written by an older medlite, without digests; it loads unverified", file or "model")
    elif (digests.get("contract_sha256") != contract_digest(d)
          or digests.get("content_sha256") != digest_outside(model, (start, end))):
        raise ModelError(file, "the model's weights do not match its contract: the file was damaged or altered; "
                               "re-copy it")
    return contract
