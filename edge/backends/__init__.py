"""The backends medlite can run a model on, best first; each has ``is_available`` and ``open_model``."""

from medlite.edge.backends import cpu, edgetpu, gpu

CHAIN = (edgetpu, gpu, cpu)  # "auto" tries them in this order
BY_NAME = {b.NAME: b for b in CHAIN}
NAMES = tuple(BY_NAME)

__all__ = ["CHAIN", "BY_NAME", "NAMES"]
