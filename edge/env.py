"""What ``medlite env`` reports: versions, DICOM decoders, the CPU, and each backend's availability."""

from __future__ import annotations

import os
import platform

from . import backends
from .backends.session import Options
from .device import device_info, version_of

PACKAGES = ("medlite", "ai-edge-litert", "tflite-runtime", "numpy", "opencv-python-headless", "pydicom",
            "pylibjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "python-gdcm", "rich", "tensorflow")


def decoders() -> dict[str, str]:
    """For each compressed transfer syntax: the plugins that can decode it, or what to install."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import (JPEG2000, JPEG2000Lossless, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLosslessSV1,
                             JPEGLSLossless, RLELossless)

    out = {}
    for uid in (JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless, JPEG2000,
                RLELossless):
        d = get_decoder(uid)
        out[uid.name] = (", ".join(d.available_plugins) if d.is_available
                         else "MISSING: " + "; ".join(d.missing_dependencies))
    return out


def environment(model: str | None = None) -> dict:
    """Everything a bug report needs; with ``model``, each backend is probed with that model."""
    info = {"python": platform.python_version(), "packages": {p: version_of(p) for p in PACKAGES}}
    info["device"] = device_info()
    info["dicom_decoders"] = decoders()
    options = Options(path=model if model and os.path.isfile(model) else None)
    status = {}
    for b in backends.CHAIN:
        ok, reason = b.is_available(options)
        status[b.NAME] = {"available": ok, "reason": reason}
    info["backends"] = status
    if model:
        from .runtime import load

        try:
            m = load(model)
            info["model"] = {"path": model, "backend": m.backend, "sha256": m.sha256,
                             "intended_use": m.contract.intended_use.describe(),
                             "attempts": [vars(a) for a in m.attempts]}
        except Exception as e:  # the report must still print when the model is the problem
            info["model"] = {"path": model, "error": str(e)}
    return info


def render(info: dict):
    from rich.table import Table

    t = Table(title="medlite env", show_header=False)
    t.add_column("what")
    t.add_column("value")
    for name, v in info["packages"].items():
        t.add_row(name, v or "[dim]not installed")
    d = info["device"]
    t.add_row("cpu", f"{d['cpu']} ({d['machine']}, {d['cores']} cores)")
    t.add_row("cpu features", ", ".join(d["cpu_features"]) or "-")
    t.add_row("os", d["os"])
    t.add_row("runtime", d["runtime"])
    for ts, v in info["dicom_decoders"].items():
        t.add_row(f"decoder {ts}", v)
    for name, s in info["backends"].items():
        t.add_row(f"backend {name}", "[green]available" if s["available"] else f"[yellow]unavailable: {s['reason']}")
    if "model" in info:
        t.add_row("model", str(info["model"]))
    return t
