"""medlite.edge: what runs on the cart. Reads images and DICOMs, applies a model's contract, runs it
on the best backend present. Never imports TensorFlow."""

# The stage is medlite.edge; imported as plain `edge` (the checkout's root on sys.path) it would be a second
# copy with its own exception classes.
if __name__ != "medlite.edge":
    raise ImportError(f"import medlite.edge, not {__name__}")

from .backends.session import Options  # noqa: E402
from .contract import Contract, InputSpec, IntendedUse, Preprocess, read_contract  # noqa: E402
from .decision import decide  # noqa: E402
from .errors import BackendUnavailable, DataError, InputError, MedliteError, ModelError, Rejected  # noqa: E402
from .frames import Frame  # noqa: E402
from .runtime import Attempt, Model, Prediction, load  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = [
    "load", "Model", "Prediction", "Attempt", "Frame", "Options", "decide",
    "Contract", "InputSpec", "IntendedUse", "Preprocess", "read_contract",
    "MedliteError", "InputError", "ModelError", "DataError", "BackendUnavailable", "Rejected", "__version__",
]
