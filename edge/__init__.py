"""medlite.edge: what runs on the cart. Reads images and DICOMs, applies a model's contract, runs it
on the best backend present. Never imports TensorFlow."""

from medlite.edge.contract import Contract, InputSpec, Preprocess, read_contract
from medlite.edge.errors import BackendUnavailable, DataError, InputError, MedliteError, ModelError
from medlite.edge.frames import Frame
from medlite.edge.runtime import Attempt, Model, Prediction, load

__all__ = [
    "load", "Model", "Prediction", "Attempt", "Frame",
    "Contract", "InputSpec", "Preprocess", "read_contract",
    "MedliteError", "InputError", "ModelError", "DataError", "BackendUnavailable",
]
