"""The errors conversion raises; importable without TensorFlow, so that the CLI can tell them apart."""

from __future__ import annotations

from ..edge.errors import MedliteError


class ConversionError(MedliteError, RuntimeError):
    """TensorFlow's converter refused the model; the message names the ops and layers it reported."""


class ConvertError(MedliteError, RuntimeError):
    """A conversion that cannot start or finish: an existing output, missing training data, a full disk."""
