"""medlite: medical-imaging CNNs from training to the cart, with every variant's cost measured on the device.

The stages are subpackages imported on demand: ``medlite.edge`` (the cart
runtime, no TensorFlow), ``medlite.train`` and ``medlite.convert``.
"""

from medlite._version import __version__

__all__ = ["__version__"]
