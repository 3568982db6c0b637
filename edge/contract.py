"""The model contract: everything needed to run a .tflite model correctly, carried inside the file.

The contract is JSON stored as a metadata entry named ``medlite.contract`` in
the flatbuffer, so a model file alone is enough on a cart: its input, how
pixels become that input, its labels and operating point, and where it came from.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ModelError
from .tflite_file import check_model_bytes

METADATA_NAME = "medlite.contract"
SCHEMA = 1
INTERPOLATIONS = ("area", "linear", "cubic", "nearest")
COLORS = ("grey", "rgb")
VOI_POLICIES = ("file", "minmax")
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
class Contract:
    """What a model promises and needs; see DESIGN.md, 'The model contract'."""

    input: InputSpec
    labels: tuple[str, ...]
    preprocess: Preprocess = field(default_factory=Preprocess)
    positive_index: int | None = None  # binary models: the class whose score meets the threshold
    threshold: float | None = None  # operating point chosen on validation data for this variant
    operating_point: str = ""  # how the threshold was chosen, e.g. "sensitivity>=0.95"
    provenance: dict[str, Any] = field(default_factory=dict)  # version, variant, hashes
    validation: dict[str, Any] = field(default_factory=dict)  # metrics measured at conversion
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
                positive_index=d.get("positive_index"),
                threshold=d.get("threshold"),
                operating_point=d.get("operating_point", ""),
                provenance=dict(d.get("provenance", {})),
                validation=dict(d.get("validation", {})),
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
        if len(self.labels) < 2:
            problems.append("a classifier needs at least two labels")
        if self.positive_index is not None and not 0 <= self.positive_index < len(self.labels):
            problems.append(f"positive_index {self.positive_index} is not a label index")
        if problems:
            raise ModelError(file, "the medlite contract is invalid: " + "; ".join(problems))


def read_contract(model: bytes, file: str | None = None) -> Contract:
    """The contract inside a .tflite file's bytes; ModelError when there is none."""
    metadata = check_model_bytes(model, file)
    raw = metadata.get(METADATA_NAME)
    if raw is None:
        raise ModelError(file, "this .tflite has no medlite contract (no 'medlite.contract' metadata), so "
                               "medlite cannot know its preprocessing, labels or threshold; produce the model "
                               "with `medlite convert` (or `medlite demo`) instead of another converter")
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(file, f"the medlite contract is not valid JSON ({e})") from None
    return Contract.from_dict(d, file)
