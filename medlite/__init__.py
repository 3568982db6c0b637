"""medlite: medical-imaging CNNs from training to the cart, with every variant's cost measured on the device.

The stages are subpackages imported on demand: ``medlite.edge`` (the cart
runtime, no TensorFlow), ``medlite.measure`` (data sets, bench, report,
select), ``medlite.train`` and ``medlite.convert``. In a source checkout they
are the top-level folders ``edge/``, ``measure/``, ``train/`` and ``convert/``,
and ``medlite/`` holds a link to each, so that the checkout itself is laid out
as the package is (Python and import graphers started in its root see it whole).
"""

from medlite.edge.version import __version__

__all__ = ["__version__"]
