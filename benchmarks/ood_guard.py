"""How well each model's out-of-distribution guard tells foreign images from its own, on real images.

    python benchmarks/ood_guard.py MODELS_DIR --data-dir ../shared/data

For each model in MODELS_DIR (what `medlite convert` or `medlite demo` wrote): the share of its own test
split that the guard flags (false alarms), and the share of each set of foreign images it flags
(detections). The intended-use rules are switched off here, so that DICOMs reach the guard: on a cart the
rules reject ultrasound DICOMs before the guard sees them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from pydicom.data import get_testdata_file

from medlite.edge import Frame, load
from medlite.measure import datasets

US_PYDICOM = ("examples_rgb_color.dcm", "examples_palette.dcm", "examples_ybr_color.dcm", "examples_jpeg2k.dcm")


def flagged(model, sources) -> tuple[int, int]:
    """(flagged, seen) over every frame of every source."""
    hits = seen = 0
    for source in sources:
        for frame in model.frames(source):
            hits += not model.predict_frame(frame).in_distribution  # the guard as the model computes it
            seen += 1
    return hits, seen


def foreign_sets(data_dir: Path) -> dict[str, list]:
    us = [str(data_dir / "dicom" / n) for n in ("US1_UNCR.dcm", "OBXXXX1A_rle.dcm")]
    us += [get_testdata_file(n, download=False) for n in US_PYDICOM]
    busi = sorted(str(p) for p in (data_dir / "busi" / "images").rglob("*.png"))
    return {
        "ultrasound DICOMs (shared + pydicom; the cine by its middle frame)": us,
        "BUSI breast ultrasound PNGs": busi,
        "NIH ChestX-ray14 adult chest PNGs (1024 px)": sorted(str(p) for p in (data_dir / "images").glob("*.png")),
        "chest DICOMs (CR PA JPEG 2000, DX)": [str(data_dir / "dicom" / n)
                                               for n in ("RG1_J2KI.dcm", "nih_cxr14_dx_nofinding.dcm")],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", type=Path)
    ap.add_argument("--data", default="pneumoniamnist")
    ap.add_argument("--data-dir", type=Path, required=True)
    args = ap.parse_args()
    test = datasets.load(args.data, args.data_dir).splits["test"]
    own = [Frame(img.astype(np.float32)[..., None] if img.ndim == 2 else img.astype(np.float32))
           for img in test.images]
    sets = foreign_sets(args.data_dir)
    print("| model | own test images flagged | " + " | ".join(sets) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in sets) + " |")
    for path in sorted(args.models.glob("*.tflite")):
        model = load(path, backend="cpu", ignore_intended_use=True)
        if model.contract.features_output is None or not model.contract.ood:
            print(f"| {path.name} | no detector | " + " | ".join("-" for _ in sets) + " |")
            continue
        h, n = flagged(model, own)
        cells = [f"{h / n:.1%} ({h}/{n})"]
        for sources in sets.values():
            h2, n2 = flagged(model, sources)
            cells.append(f"{h2 / n2:.1%} ({h2}/{n2})")
        print(f"| {path.name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
