"""The one table of model variants, shared by the CLI, the converter, the bench and the report."""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    integer: bool  # full-integer graph: a candidate for the Edge TPU
    calibrated: bool  # needs real training images to set activation ranges
    fine_tuned: bool = False  # retrains the model first (QAT, pruning)


VARIANTS = {v.name: v for v in (
    Variant("fp32", "float32, as trained", integer=False, calibrated=False),
    Variant("fp16", "float16 weights, float32 compute", integer=False, calibrated=False),
    Variant("dynamic", "int8 weights, float activations (dynamic range)", integer=False, calibrated=False),
    Variant("int8", "full integer: int8 weights and activations, calibrated", integer=True, calibrated=True),
    Variant("int16x8", "16-bit activations, 8-bit weights, calibrated", integer=False, calibrated=True),
    Variant("int8-qat", "quantization-aware fine-tuning, then full integer", integer=True, calibrated=True,
            fine_tuned=True),
    Variant("int8-pruned", "magnitude pruning with fine-tuning, then full integer", integer=True, calibrated=True,
            fine_tuned=True),
)}
NAMES = tuple(VARIANTS)
REFERENCE = "fp32"


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
