"""What the node's heatmap objects cost an analysed image: the Secondary Capture picture and the Segmentation,
each built and written as `medlite serve` does, beside the report alone.

    python benchmarks/heatmap_objects.py MODEL DICOM...

For each DICOM: the model's prediction with its heatmap (as the node decodes it, the picture side 512), then
the report, the picture and the segmentation built and encoded in memory, 10 times each; prints the medians
(ms) and each object's size.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np

from medlite.edge import capture, load, segmentation, sr
from medlite.edge.batch import job_of, records
from medlite.edge.engine import Engine
from medlite.edge.heatmap import overlay


def encoded(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def timed(make, rounds: int) -> tuple[float, int]:
    """The median ms of building and encoding, and the encoded size."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        data = encoded(make())
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), len(data)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("dicoms", nargs="+")
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    model = load(args.model, backend="cpu", ignore_intended_use=True)
    prov = model.contract.provenance
    algorithm = {"name": prov.get("family", "model"), "variant": prov.get("variant", "?"), "sha256": model.sha256,
                 "provenance": "benchmark"}
    with Engine(job_of(model, 512), 0) as engine:
        for path in args.dicoms:
            engine.submit(path)
            decoded = engine.next(timeout=60)
            drawn = {}
            recs = list(records(model, decoded, lambda rec, p, frame: drawn.update(p=p, frame=frame)))
            p, header = drawn["p"], decoded.header
            picture = overlay(drawn["frame"].pixels, p.heatmap)
            rows = {
                "report": timed(lambda: sr.build(header, recs, algorithm), args.rounds),
                "picture (SC)": timed(lambda: capture.build(header, picture, algorithm), args.rounds),
                "segmentation": timed(lambda: segmentation.build(header, p.heatmap, p.heatmap_label, algorithm),
                                      args.rounds),
            }
            raw = int(header.Rows) * int(header.Columns)
            print(f"{path}: {header.Modality} {header.Columns}x{header.Rows}, heatmap {p.heatmap.shape[1]}x"
                  f"{p.heatmap.shape[0]} of '{p.heatmap_label}', peak at {p.peak}")
            for name, (ms, size) in rows.items():
                print(f"  {name:14s} {ms:7.1f} ms  {size / 1024:8.1f} KiB")
            print(f"  segmentation uncompressed would be {raw / 1024:.0f} KiB "
                  f"({raw / rows['segmentation'][1]:.0f}x); map max {np.max(p.heatmap)}")


if __name__ == "__main__":
    main()
