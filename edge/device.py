"""Facts about the machine a model runs on, for reports and bug reports."""

from __future__ import annotations

import os
import platform
from importlib import metadata

CPU_FLAGS = ("avx", "avx2", "avx512f", "fma", "sse4_2", "asimd", "asimddp", "neon", "i8mm", "sve")


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and value.strip():
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = value.split()
    except OSError:
        pass
    return model, [f for f in CPU_FLAGS if f in flags]


def version_of(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def device_info() -> dict:
    """Machine, CPU, cores, OS and runtime versions; what a report's header needs."""
    from .version import __version__
    from .backends.litert import runtime

    cpu, flags = _cpuinfo()
    try:
        rt = str(runtime())
    except RuntimeError:
        rt = "none"
    return {
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_features": flags,
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "runtime": rt,
        "medlite": __version__,
        "numpy": version_of("numpy"),
        "opencv": version_of("opencv-python-headless") or version_of("opencv-python"),
    }
