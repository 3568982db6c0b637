"""The errors medlite raises for bad input: each names the file and the problem."""

from __future__ import annotations


class MedliteError(Exception):
    """Base of every error medlite raises on purpose (never a crash)."""


class InputError(MedliteError, ValueError):
    """An image or DICOM that cannot be read or does not fit the model's contract."""

    def __init__(self, file: str | None, problem: str):
        self.file = file
        self.problem = problem
        super().__init__(f"{file}: {problem}" if file else problem)


class ModelError(MedliteError, ValueError):
    """A model file that is not a usable medlite model (corrupt, truncated, no contract)."""

    def __init__(self, file: str | None, problem: str):
        self.file = file
        self.problem = problem
        super().__init__(f"{file}: {problem}" if file else problem)


class DataError(MedliteError, ValueError):
    """A data set that cannot be found or does not have the expected shape."""


class BackendUnavailable(MedliteError, RuntimeError):
    """An accelerator that is absent or failed to load; the reason says which."""

    def __init__(self, backend: str, reason: str):
        self.backend = backend
        self.reason = reason
        super().__init__(f"backend {backend!r} unavailable: {reason}")


class Rejected(MedliteError):
    """A readable input outside the model's intended use: not an error, and never answered; ``reason`` says
    which rule and what the file holds."""

    def __init__(self, file: str | None, reason: str):
        self.file = file
        self.reason = reason
        super().__init__(f"{file}: {reason}" if file else reason)
