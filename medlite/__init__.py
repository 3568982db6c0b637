"""medlite: medical-imaging CNNs from training to the cart, with every variant's cost measured on the device.

The stages are subpackages imported on demand: ``medlite.edge`` (the cart
runtime, no TensorFlow), ``medlite.measure`` (data sets, bench, report,
select), ``medlite.train`` and ``medlite.convert``. In a source checkout they
are the top-level folders ``edge/``, ``measure/``, ``train/`` and ``convert/``.
"""

import os as _os

# In a checkout, Python started in the root finds this folder before the installed package, and this folder
# alone lacks the stages that live beside it: say so, rather than fail later on "no module medlite.edge".
if _os.path.isfile(_os.path.join(_os.path.dirname(__file__), "..", "pyproject.toml")):
    raise ImportError(f"medlite was imported from its source folder ({_os.path.dirname(__file__)}), where the "
                      "stages it needs are not below it; run Python outside the checkout's root, or use the "
                      "`medlite` command of the environment that `make venv` installs")

from medlite.edge.version import __version__  # noqa: E402

__all__ = ["__version__"]
