"""Are bench's latency figures repeatable on this machine? Two bench runs of the same models, p50 compared.

Usage: python benchmarks/bench_repeat.py MODELS_DIR [--data pneumoniamnist] [--data-dir DIR] [--runs 200]

Each run is a full `medlite bench` measurement (warm-up, interleaved rounds); the table gives each row's
p50 in both runs and their ratio. The bar is agreement within 15% (ratio between 0.85 and 1.15).
"""

import argparse
import os
import platform
from pathlib import Path

from medlite.measure import datasets
from medlite.measure.bench import bench


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models")
    ap.add_argument("--data", default="pneumoniamnist")
    ap.add_argument("--data-dir")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--threads", type=int, action="append", help="thread counts (default 1 and 2)")
    args = ap.parse_args()
    paths = sorted(str(p) for p in Path(args.models).glob("*.tflite"))
    split = datasets.load(args.data, args.data_dir).splits["test"]
    threads = args.threads or [1, 2]
    first, _ = bench(paths, split, runs=args.runs, threads_list=threads)
    second, _ = bench(paths, split, runs=args.runs, threads_list=threads)
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {args.runs} timed runs "
          "per row per bench run.\n")
    print("| variant | backend | threads | p50 run 1 (ms) | p50 run 2 (ms) | ratio 2/1 | within 15% |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    worst: dict = {}
    for a, b in zip(first, second):
        ratio = b["latency_ms"]["p50"] / a["latency_ms"]["p50"]
        worst[a["threads"]] = max(worst.get(a["threads"], 1.0), ratio, 1 / ratio)
        print(f"| {a['variant']} | {a['backend']} | {a['threads']} | {a['latency_ms']['p50']:.4f} | {b['latency_ms']['p50']:.4f} | "
              f"{ratio:.3f} | {'yes' if 0.85 <= ratio <= 1.15 else 'NO'} |")
    for t, w in sorted(worst.items()):
        print(f"\n{t} thread(s): largest disagreement {100 * (w - 1):.1f}%")


if __name__ == "__main__":
    main()
