"""The one preprocessing path, from display frame to model input; training uses this same code."""

from __future__ import annotations

import cv2
import numpy as np

from .contract import InputSpec, Preprocess
from .errors import InputError

_INTERP = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
           "nearest": cv2.INTER_NEAREST}


def prepare(pixels: np.ndarray, pre: Preprocess, spec: InputSpec, file: str | None = None) -> np.ndarray:
    """Display pixels (HxWxC, 0..255) to the model's float input (H x W x channels)."""
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise InputError(file, f"expected an HxWx1 or HxWx3 image, got shape {pixels.shape}")
    x = np.asarray(pixels, dtype=np.float32)
    if pre.color == "grey" and x.shape[2] == 3:
        x = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
    elif pre.color == "rgb" and x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    if pre.crop == "center":
        h, w = x.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = x[top : top + side, left : left + side]
    h, w = x.shape[:2]
    if h < spec.height or w < spec.width:
        raise InputError(file, f"the image is {pixels.shape[0]}x{pixels.shape[1]} ({h}x{w} after cropping), "
                               f"smaller than the model's {spec.height}x{spec.width} input; medlite does not "
                               "upscale images, since that would invent detail")
    if (h, w) != (spec.height, spec.width):
        x = cv2.resize(x, (spec.width, spec.height), interpolation=_INTERP[pre.interpolation])
        if x.ndim == 2:
            x = x[..., None]
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    return (x * np.float32(1 / 255) - mean) / std


def prepare_batch(images: np.ndarray, pre: Preprocess, spec: InputSpec) -> np.ndarray:
    """A stack of 8-bit images (N x H x W [x C], as in MedMNIST) through ``prepare``."""
    if images.ndim == 3:
        images = images[..., None]
    out = np.empty((len(images), spec.height, spec.width, spec.channels), dtype=np.float32)
    for i, img in enumerate(images):
        out[i] = prepare(img.astype(np.float32), pre, spec)
    return out


def quantize(x: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Float model input to the integer input of a fully quantized model."""
    if spec.dtype == "float32":
        return x.astype(np.float32, copy=False)
    info = np.iinfo(spec.dtype)
    q = np.round(x / spec.scale) + spec.zero_point
    return np.clip(q, info.min, info.max).astype(spec.dtype)
