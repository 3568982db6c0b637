"""The backends medlite can run a model on, best first.

Each is a plug-in module with the same shape, as pydicom's pixel decoders are:
``NAME``, ``is_available(options) -> (bool, reason)`` and
``open(model_bytes, options) -> Session`` (``session.Options``, ``session.Session``).
"""

from . import cpu, edgetpu, gpu
from .session import Options, Session

CHAIN = (edgetpu, gpu, cpu)  # "auto" tries them in this order
BY_NAME = {b.NAME: b for b in CHAIN}
NAMES = tuple(BY_NAME)

__all__ = ["CHAIN", "BY_NAME", "NAMES", "Options", "Session"]
