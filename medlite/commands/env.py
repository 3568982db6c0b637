"""``medlite env``: versions, decoders, the CPU and each backend's availability, for bug reports."""

from __future__ import annotations

import json

from .shared import EXIT_OK, trust_args, trusted


def register(sub, common) -> None:
    p = sub.add_parser("env", parents=[common], help="versions, CPU and accelerators, for bug reports",
                       description="Print Python, medlite, LiteRT, NumPy, OpenCV and pydicom versions, DICOM "
                                   "decoders, the CPU and its features, and whether each backend is available.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--model", help="also probe each backend with this model (the GPU probe compiles it), and show "
                                   "its intended use and whether it is signed")
    trust_args(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from medlite.edge.env import environment, render

    info = environment(args.model, trusted(args))
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        from rich.console import Console

        Console().print(render(info))
    return EXIT_OK
