"""Class activation maps from the deployed model: its last feature map, an output computed on the accelerator
like every other, combined on the host with the classifier head's float weights.

For a head of global average pooling then a dense layer, a class's logit is the
mean over positions of ``F(x, y) @ w_c`` plus the bias: that sum's terms are
the map (CAM, Zhou et al. 2016), exact. With one hidden dense layer and a ReLU
between (the small CNN's head), the ReLU's active units at this input fix the
head to a linear map, ``W1[:, active] @ W2[active, c]``, and the map is again
the exact decomposition of the logit (what Grad-CAM's gradient x activation
gives for such a head). The active units come from the model's features output.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .packing import pack, unpack

BOX_FRACTION = 0.5  # the box holds the hot region around the peak: the map at least this share of its peak


@dataclass(frozen=True)
class HeadLayer:
    kernel: np.ndarray  # inputs x outputs
    bias: np.ndarray
    relu: bool  # a ReLU follows


@dataclass(frozen=True)
class Cam:
    output: int  # which model output holds the last feature map (1 x h x w x C)
    layers: tuple[HeadLayer, ...]  # global average pooling's output to the logits
    box_fraction: float = BOX_FRACTION

    def to_dict(self) -> dict:
        return {"method": "cam", "output": self.output, "box_fraction": self.box_fraction,
                "layers": [{"shape": list(layer.kernel.shape), "kernel": pack(layer.kernel), "bias": pack(layer.bias),
                            "relu": layer.relu} for layer in self.layers]}

    @classmethod
    def from_dict(cls, d: dict) -> "Cam":
        layers = tuple(HeadLayer(unpack(x["kernel"], tuple(x["shape"])), unpack(x["bias"], (x["shape"][1],)),
                                 bool(x["relu"])) for x in d["layers"])
        if not 1 <= len(layers) <= 2 or (len(layers) == 2 and not layers[0].relu):
            raise ValueError("a heatmap head is one dense layer, or two with a ReLU between")
        return cls(int(d["output"]), layers, float(d.get("box_fraction", BOX_FRACTION)))

    def class_map(self, feature_map: np.ndarray, features: np.ndarray | None, cls: int) -> np.ndarray:
        """The map of class ``cls`` at the feature map's resolution (h x w); its mean plus the head's bias
        is the class's logit."""
        f = np.asarray(feature_map, dtype=np.float64).reshape(feature_map.shape[-3:])
        first = self.layers[0]
        if len(self.layers) == 1:
            w = first.kernel[:, cls]
        else:
            active = np.asarray(features).reshape(-1) > 0
            w = first.kernel[:, active] @ self.layers[1].kernel[active, cls]
        return f @ w

    def logit_offset(self, features: np.ndarray | None, cls: int) -> float:
        """What the map's mean lacks of the logit: the biases (through the active units)."""
        if len(self.layers) == 1:
            return float(self.layers[0].bias[cls])
        active = np.asarray(features).reshape(-1) > 0
        second = self.layers[1]
        return float(self.layers[0].bias[active] @ second.kernel[active, cls] + second.bias[cls])


@dataclass(frozen=True)
class Rendered:
    image: np.ndarray  # uint8, the input image's own height x width: 0 cold, 255 the peak
    peak: tuple[int, int]  # (x, y) of the maximum, in the input image's pixels
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1), x1 and y1 exclusive: the hot region around the peak


def region(height: int, width: int, crop: str) -> tuple[int, int, int, int]:
    """(top, left, rows, cols) of the input image that the model saw, as ``prepare`` crops it."""
    if crop == "center":
        side = min(height, width)
        return (height - side) // 2, (width - side) // 2, side, side
    return 0, 0, height, width


def render(cmap: np.ndarray, height: int, width: int, crop: str, fraction: float = BOX_FRACTION) -> Rendered:
    """A class map laid over the input image's own pixels: positive evidence only, scaled to its peak."""
    top, left, rows, cols = region(height, width, crop)
    positive = np.maximum(cmap, 0).astype(np.float32)
    up = cv2.resize(positive, (cols, rows), interpolation=cv2.INTER_LINEAR)
    full = np.zeros((height, width), np.float32)
    full[top : top + rows, left : left + cols] = up
    peak_value = float(full.max())
    if peak_value <= 0:  # no positive evidence anywhere: the centre of the region, and all of it as the box
        cy, cx = top + rows // 2, left + cols // 2
        return Rendered(np.zeros((height, width), np.uint8), (cx, cy), (left, top, left + cols, top + rows))
    y, x = np.unravel_index(int(np.argmax(full)), full.shape)
    hot = (full >= fraction * peak_value).astype(np.uint8)
    _, labels = cv2.connectedComponents(hot, connectivity=8)
    ys, xs = np.nonzero(labels == labels[y, x])
    image = np.round(full * (255.0 / peak_value)).astype(np.uint8)
    return Rendered(image, (int(x), int(y)), (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))


def overlay(pixels: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """A colour picture for a person: the image in grey with the map in OpenCV's JET colours over it (BGR)."""
    grey = pixels if pixels.ndim == 2 else (pixels[..., 0] if pixels.shape[2] == 1 else
                                            cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY))
    base = cv2.cvtColor(np.clip(grey, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    if heat.shape != base.shape[:2]:
        heat = cv2.resize(heat, (base.shape[1], base.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(heat, cv2.COLORMAP_JET)
    weight = (heat.astype(np.float32) / 255.0 * alpha)[..., None]  # cold regions leave the image as it is
    return np.round(base * (1 - weight) + colour * weight).astype(np.uint8)
