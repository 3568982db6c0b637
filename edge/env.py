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


def environment(model: str | None = None, trust=()) -> dict:
    """Everything a bug report needs; with ``model``, each backend is probed with that model, and its signature
    is described (checked against ``trust``, public keys, where given)."""
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
        info["model"]["signature"] = signature_status(model, trust)
    return info


def signature_status(model: str, trust=()) -> str:
    """Whether a model file is signed, and by which key; checked where trusted keys are given."""
    from . import signature
    from .runtime import signer

    if trust:
        try:
            return f"signed by trusted key {signer(model, trust)}"
        except (signature.Untrusted, ValueError) as e:
            return f"refused under --trust ({getattr(e, 'case', 'error')}): {getattr(e, 'problem', e)}"
    try:
        key = signature.signed_by(model)
    except ValueError as e:
        return f"signature unreadable: {e}"
    return ("not signed" if key is None else
            f"signed by key {key} (not checked: pass --trust PUBLIC.pem to verify it)")


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
