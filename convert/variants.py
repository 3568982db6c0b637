"""The one table of model variants: CLI choices, converter settings and fine-tuning come from each entry.

It imports no TensorFlow (the CLI reads it to check names); ``export`` maps
the settings named here onto TensorFlow's converter.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    integer: bool = False  # full-integer graph with integer input and output: a candidate for the Edge TPU
    calibrated: bool = False  # needs real training images to set activation ranges
    optimize: bool = False  # the converter's default optimizations (quantization of some kind)
    float16: bool = False  # float16 weights
    ops: str = "builtins"  # "builtins", "int8" (full integer) or "int16x8" (16-bit activations)
    fine_tune: str | None = None  # the fine-tuning that comes first: "quantization_aware" or "pruned"
    layer_errors: bool = False  # per-layer quantization error, and the worst layers kept in float on request
    reference: bool = False  # what every other variant is validated against

    @property
    def float_activations(self) -> bool:
        """The graph computes in float (no calibrated ranges): its softmax keeps the ranking of scores."""
        return not self.calibrated


VARIANTS = {v.name: v for v in (
    Variant("fp32", "float32, as trained", reference=True),
    Variant("fp16", "float16 weights, float32 compute", optimize=True, float16=True),
    Variant("dynamic", "int8 weights, float activations (dynamic range)", optimize=True),
    Variant("int8", "full integer: int8 weights and activations, calibrated", integer=True, calibrated=True,
            optimize=True, ops="int8", layer_errors=True),
    Variant("int16x8", "16-bit activations, 8-bit weights, calibrated", calibrated=True, optimize=True,
            ops="int16x8"),
    Variant("int8-qat", "quantization-aware fine-tuning, then full integer", integer=True, calibrated=True,
            optimize=True, ops="int8", fine_tune="quantization_aware"),
    Variant("int8-pruned", "magnitude pruning with fine-tuning, then full integer", integer=True, calibrated=True,
            optimize=True, ops="int8", fine_tune="pruned"),
)}
NAMES = tuple(VARIANTS)
REFERENCE = next(v.name for v in VARIANTS.values() if v.reference)


def parse_variants(text: str | list[str]) -> list[str]:
    """Comma-separated or listed names, checked against the table, with a "did you mean" on a typo."""
    names = [n.strip() for part in ([text] if isinstance(text, str) else text) for n in part.split(",") if n.strip()]
    if names == ["all"]:
        return list(NAMES)
    for n in names:
        if n not in VARIANTS:
            close = difflib.get_close_matches(n, NAMES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown variant {n!r} (choose from {', '.join(NAMES)}, or 'all'){hint}")
    return list(dict.fromkeys(names))
