"""Convert a bundle to every variant and print what each costs: size, AUC, agreement with fp32.

Usage: python benchmarks/convert_variants.py BUNDLE --out DIR [--data-dir DIR]

Validation metrics choose each variant's threshold; test metrics are measured at that threshold.
"""

import argparse

from medlite.convert.pipeline import ConvertOptions, convert_bundle
from medlite.convert.variants import NAMES


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--out", required=True)
    ap.add_argument("--data-dir")
    args = ap.parse_args()
    m = convert_bundle(args.bundle, args.out, ConvertOptions(variants=list(NAMES), force=True, allow_drop=True,
                                                              data_dir=args.data_dir), progress=print)
    ref = m["variants"][0]
    print(f"\nBundle {args.bundle}; fp32 test AUC {ref['test']['auc']:.4f}.\n")
    print("| variant | size KiB | size / fp32 | gzip KiB | test AUC | test AUC - fp32 | test agreement with fp32 | "
          "val agreement | sensitivity | specificity | Edge TPU ops | convert s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for e in m["variants"]:
        t, v = e["test"], e["metrics"]
        tpu = f"{e['edgetpu']['mapped']}/{e['edgetpu']['mapped'] + e['edgetpu']['cpu']}" if "edgetpu" in e else "-"
        print(f"| {e['variant']} | {e['size_bytes'] / 1024:.1f} | {e['size_bytes'] / ref['size_bytes']:.3f} | "
              f"{e['size_gzip_bytes'] / 1024:.1f} | {t['auc']:.4f} | {t['auc'] - ref['test']['auc']:+.4f} | "
              f"{t['agreement_with_fp32']:.4f} | {v['agreement_with_fp32']:.4f} | {t['sensitivity']:.3f} | "
              f"{t['specificity']:.3f} | {tpu} | {e['convert_seconds']} |")
    for e in m["variants"]:
        if e.get("layer_errors"):
            print(f"\n{e['variant']} worst layers (RMSE / quantization step): " + ", ".join(
                f"{r['tensor']} {r['rmse_over_scale']:.2f}" for r in e["layer_errors"][:3]))
        if "sparsity" in e:
            print(f"\n{e['variant']}: sparsity {e['sparsity']:.3f}")


if __name__ == "__main__":
    main()
