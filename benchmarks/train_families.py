"""Train every model family's default recipe on a data set and print its test figures.

Usage: python benchmarks/train_families.py [--data pneumoniamnist] [--out DIR] [--families a,b]

The threshold is chosen on validation (target sensitivity 0.95); the test split is
used once, for these figures. Prints a Markdown table for benchmarks/RESULTS.md.
"""

import argparse
import json
import os
import platform
import tempfile
import time

from medlite.train.config import load_config, recipe_families
from medlite.train.pipeline import train_bundle


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="pneumoniamnist")
    ap.add_argument("--data-dir")
    ap.add_argument("--out", default=None, help="keep the bundles here (default: a temporary folder)")
    ap.add_argument("--families", default=",".join(recipe_families()))
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="medlite-families-")
    rows = []
    for family in args.families.split(","):
        config = load_config(family=family)
        t0 = time.perf_counter()
        bundle, m = train_bundle(args.data, config, os.path.join(out, family), data_dir=args.data_dir)
        seconds = time.perf_counter() - t0
        t, v, info = m["test"], m["validation"], m["info"]
        rows.append({"family": family, "test": t, "validation": v, "parameters": info["parameters"],
                     "train_seconds": round(seconds, 1), "epochs_run": info["epochs_run"],
                     "best_epoch": info["best_epoch"], "seed": config.seed, "options": config.model_options})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores. Data: {args.data}.\n")
    print("| family | options | parameters | test AUC (95% CI) | sensitivity | specificity | accuracy | "
          "threshold (from val) | val AUC | epochs (best) | train s | seed |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        t = r["test"]
        lo, hi = t["auc_ci95"]
        print(f"| {r['family']} | {r['options']} | {r['parameters']:,} | {t['auc']:.4f} ({lo:.4f}-{hi:.4f}) | "
              f"{t['sensitivity']:.3f} | {t['specificity']:.3f} | {t['accuracy']:.3f} | {t['threshold']:.4f} | "
              f"{r['validation']['auc']:.4f} | {r['epochs_run']} ({r['best_epoch']}) | {r['train_seconds']} | "
              f"{r['seed']} |")


if __name__ == "__main__":
    main()
