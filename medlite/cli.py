"""The ``medlite`` command: one entry point, one subcommand per job.

Each handler imports its stage when it runs, so ``medlite predict`` on a cart
never loads TensorFlow and ``medlite train`` there says what to install.
"""

from __future__ import annotations

import argparse
import json
import sys

from medlite._version import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A problem with what the user asked for: reported in one line, exit status 2."""


def _needs_train():
    try:
        import medlite.train.tf  # noqa: F401
    except ImportError:
        raise UsageError("this command needs TensorFlow, which the cart install leaves out: "
                         "pip install 'medlite[train]'") from None


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _variants(text: str) -> list[str]:
    from medlite.edge.variants import parse_variants

    try:
        return parse_variants(text)
    except ValueError as e:
        raise UsageError(str(e)) from None


# demo ------------------------------------------------------------------------------------------------------------

def cmd_demo(args) -> int:
    _needs_train()
    from medlite.demo import run_demo

    variants = _variants(args.variants)
    run_demo(args.out, data=args.data, data_dir=args.data_dir, epochs=args.epochs, runs=args.runs,
             threads=args.threads, variants=variants)
    return EXIT_OK


# train -----------------------------------------------------------------------------------------------------------

def _config_fields():
    from medlite.train.config import TrainConfig

    return [f for f in TrainConfig.fields() if f.name not in ("model", "model_options")]


def cmd_train(args) -> int:
    _needs_train()
    from medlite.progress import epoch_progress
    from medlite.train.config import DEFAULT_FAMILY, load_config
    from medlite.train.pipeline import train_bundle

    family = args.model
    config = load_config(args.config, family or (None if args.config else DEFAULT_FAMILY))
    overrides = {f.name: getattr(args, f.name) for f in _config_fields()}
    if family:
        overrides["model"] = family
    config = config.updated(**overrides)
    console = _console()
    with epoch_progress(console, f"training {config.model}", config.epochs) as on_epoch:
        out, metrics = train_bundle(args.data, config, args.out, data_dir=args.data_dir, progress=on_epoch)
    for split in ("validation", "test"):
        m = metrics.get(split)
        if m:
            ci = m.get("auc_ci95")
            ci_text = f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else ""
            rates = "".join(f", {k} {m[k]:.3f}" for k in ("sensitivity", "specificity", "accuracy",
                                                             "balanced_accuracy") if k in m)
            console.print(f"{split}: AUC {m['auc']:.4f}{ci_text}{rates}")
    if metrics["info"]["skipped_files"]:
        console.print(f"[yellow]{len(metrics['info']['skipped_files'])} file(s) could not be read and were "
                      f"skipped; see {out}/bundle.json")
    console.print(f"bundle: {out}")
    return EXIT_OK


# convert ---------------------------------------------------------------------------------------------------------

def cmd_convert(args) -> int:
    _needs_train()
    from medlite.convert.finetune import FineTune
    from medlite.convert.pipeline import ConvertOptions, convert_bundle

    variants = _variants(args.variants)
    console = _console()

    float_layers = args.float_layers
    if float_layers != "auto" and not float_layers.isdigit():
        raise UsageError(f"--float-layers takes a count or 'auto', got {float_layers!r}")
    if not 0 < args.sparsity < 1:
        raise UsageError(f"--sparsity must be between 0 and 1, got {args.sparsity}")
    options = ConvertOptions(variants=variants, n_calibration=args.calibration_images, io_type=args.io_type,
                             max_auc_drop=args.max_auc_drop, allow_drop=args.allow_drop, force=args.force,
                             data_dir=args.data_dir, float_layers=float_layers,
                             finetune=FineTune(sparsity=args.sparsity, **({"qat_epochs": args.finetune_epochs,
                                                                           "prune_epochs": args.finetune_epochs}
                                                                          if args.finetune_epochs else {})))
    manifest = convert_bundle(args.bundle, args.out, options, progress=lambda v: console.print(f"converting {v}"))
    from medlite.convert.pipeline import summary_markdown

    console.print(summary_markdown(manifest))
    flagged = [e["variant"] for e in manifest["variants"] if e["flagged"]]
    if flagged:
        console.print(f"[red]AUC drop above {args.max_auc_drop} on validation: {', '.join(flagged)}")
        return EXIT_OK if args.allow_drop else EXIT_FAILED
    return EXIT_OK


# predict ---------------------------------------------------------------------------------------------------------

def cmd_predict(args) -> int:
    import dataclasses

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from medlite.edge import batch, load

    model = load(args.model, backend=args.backend, threads=args.threads, device=args.device)
    if args.frames is not None:
        frames = int(args.frames) if args.frames.lstrip("-").isdigit() else args.frames
        model.contract = model.contract.replace(preprocess=dataclasses.replace(model.contract.preprocess,
                                                                                frames=frames))
    files, missing = batch.expand(args.paths)
    console = _console()
    for a in model.attempts:
        if not a.ok:
            console.print(f"[dim]backend {a.backend} not used: {a.reason}")
    from medlite.edge.backends.litert import runtime

    console.print(f"model {args.model} on [bold]{model.backend}[/] ({runtime()}); {len(files)} file(s)")
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    counts = {"ok": 0, "error": 0}
    labels: dict[str, int] = {}
    try:
        with Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), console=console,
                      disable=args.quiet) as bar:
            task = bar.add_task("predict", total=len(files))
            last_file = None
            for rec in [*missing, *batch.run(model, files, workers=args.workers)]:
                # One line per record, flushed, so an interrupted run leaves a valid JSON Lines file.
                out.write(json.dumps(rec) + "\n")
                out.flush()
                counts[rec["status"]] += 1
                if rec["status"] == "ok":
                    labels[rec["label"]] = labels.get(rec["label"], 0) + 1
                else:
                    console.print(f"[red]{rec['file']}: {rec['error']}")
                if rec["file"] != last_file and rec["file"] in files:
                    bar.advance(task)
                    last_file = rec["file"]
    finally:
        if out is not sys.stdout:
            out.close()
    summary = ", ".join(f"{k} {v}" for k, v in sorted(labels.items())) or "none"
    console.print(f"{counts['ok']} result(s), {counts['error']} failure(s); labels: {summary}")
    return EXIT_OK if counts["error"] == 0 else EXIT_FAILED


# bench -----------------------------------------------------------------------------------------------------------

def cmd_bench(args) -> int:
    from pathlib import Path

    from rich.console import Console

    from medlite.edge import datasets
    from medlite.edge.bench import bench
    from medlite.edge.device import device_info
    from medlite.edge.report import build_report, rich_table, write_report

    paths = []
    for p in args.models:
        paths += sorted(str(f) for f in Path(p).glob("*.tflite")) if Path(p).is_dir() else [p]
    if not paths:
        raise UsageError(f"no .tflite models in {' '.join(args.models)}")
    if args.runs < 200:
        raise UsageError(f"--runs must be at least 200 for stable percentiles, got {args.runs}")
    ds = datasets.load(args.data, args.data_dir)
    if args.split not in ds.splits:
        raise UsageError(f"{ds.path} has no {args.split!r} split (it has {', '.join(ds.splits)})")
    split = ds.splits[args.split]
    console = _console()
    wanted = None if args.backend == "all" else [args.backend]
    rows, skipped = bench(paths, split, backend_names=wanted, threads_list=args.threads or [None], runs=args.runs,
                          progress=lambda text: console.print(text))
    if not rows:
        raise UsageError("no model could run on the chosen backend(s): " +
                         "; ".join(f"{b}: {why}" for b, why in skipped.items()))
    report = build_report(rows, {"name": ds.name, "split": args.split, "n": len(split.labels), "sha256": ds.sha256},
                          device_info(), skipped)
    written = write_report(report, args.out)
    Console(width=max(Console().width, 110)).print(rich_table(report))
    for b, why in skipped.items():
        console.print(f"[dim]backend {b} not measured: {why}")
    console.print(f"report: {written['json']}")
    return EXIT_OK


# report ----------------------------------------------------------------------------------------------------------

def cmd_report(args) -> int:
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        raise UsageError("medlite report draws with matplotlib: pip install 'medlite[report]'") from None
    from medlite.report_html import render

    try:
        page = render(args.results, args.out)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(page)
    return EXIT_OK


# select ----------------------------------------------------------------------------------------------------------

def cmd_select(args) -> int:
    import shutil
    from pathlib import Path

    from medlite.edge.select import select

    path = Path(args.result)
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: not a readable report.json ({e})") from None
    try:
        sel = select(report, args.max_auc_drop, None if args.min_sensitivity < 0 else args.min_sensitivity)
    except ValueError as e:
        raise UsageError(f"{path}: {e}") from None
    if sel.chosen is None:
        print(f"nothing qualifies (fp32 AUC {sel.reference_auc:.4f}):")
        for c in sel.candidates:
            print(f"  {c.name}: {'; '.join(c.failures)}")
        return EXIT_FAILED
    print(sel.explanation)
    if args.copy_to:
        model = Path(sel.chosen.row["model"])
        if not model.is_absolute() and not model.exists():
            model = path.parent / model
        if not model.exists():
            raise UsageError(f"{model}: the chosen model file is not there to copy")
        shutil.copy(model, args.copy_to)
        print(f"copied {model} to {args.copy_to}")
    return EXIT_OK


# env -------------------------------------------------------------------------------------------------------------

def cmd_env(args) -> int:
    from medlite.edge.env import environment, render

    info = environment(args.model)
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        from rich.console import Console

        Console().print(render(info))
    return EXIT_OK


# parser ----------------------------------------------------------------------------------------------------------

def _data_args(p, required=True, default=None):
    p.add_argument("--data", required=required and default is None, default=default,
                   help="a MedMNIST name (pneumoniamnist), an .npz path or a class folder"
                        + (f" (default {default})" if default else ""))
    p.add_argument("--data-dir", help="folder to look in first for a named data set (then $MEDLITE_DATA_DIR, "
                                      "then the user cache)")


def build_parser() -> argparse.ArgumentParser:
    from medlite.edge.backends import NAMES as BACKENDS

    parser = argparse.ArgumentParser(prog="medlite", description="Train, quantize and run medical-imaging CNNs on "
                                     "the cart's accelerator, with every variant's cost measured on the device.")
    parser.add_argument("--version", action="version", version=f"medlite {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="train, convert every variant, measure here, report, select",
                       description="The whole chain on PneumoniaMNIST: train the default recipe, convert every "
                                   "variant, run each on the test split through medlite.edge, write report.json, "
                                   ".md, .csv and .html, and pick the fastest variant within 0.005 AUC of fp32 "
                                   "with sensitivity at least 0.95.")
    _data_args(p, default="pneumoniamnist")
    p.add_argument("--out", default="medlite-out", help="output folder (default ./medlite-out)")
    p.add_argument("--epochs", type=int, help="cap the training epochs (default: the recipe's)")
    p.add_argument("--runs", type=int, default=200, help="timed inferences per model (default 200)")
    p.add_argument("--threads", type=int, help="CPU interpreter threads for the bench (default 1)")
    p.add_argument("--variants", default="all", help="variants to convert and measure (default all)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a CNN and write a model bundle",
                       description="Train a model family on a labelled image set and write a bundle: the Keras "
                                   "model, its contract with the operating point chosen on validation, metrics on "
                                   "validation and test, the training log and the recipe used. Recipe fields come "
                                   "from --config (YAML), then the flags below.")
    _data_args(p)
    p.add_argument("--model", help="model family: small_cnn, mobilenet_v2, resnet (default: the best default "
                                   "recipe, small_cnn)")
    p.add_argument("--config", help="recipe YAML file (fields as the flags below)")
    p.add_argument("--out", required=True, help="bundle folder to write")
    group = p.add_argument_group("recipe overrides")
    for f in _config_fields():
        kind = {"int": int, "float": float}.get(str(f.type), str)
        flag = "--" + f.name.replace("_", "-")
        if str(f.type) == "bool":
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=f.metadata.get("help"))
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=None, help=f.metadata.get("help"))
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("convert", help="quantize a bundle to validated .tflite variants",
                       description="Convert a bundle to TFLite variants, validate each through medlite.edge on the "
                                   "validation split, re-choose its operating point, and embed its contract.")
    p.add_argument("bundle", help="bundle folder from `medlite train`")
    p.add_argument("--variants", default="fp32,int8", help="comma-separated: fp32, fp16, dynamic, int8, int16x8, "
                                                          "int8-qat, int8-pruned, or 'all' (default fp32,int8)")
    p.add_argument("--out", required=True, help="output folder (must not exist unless --force)")
    p.add_argument("--calibration-images", type=int, default=300, help="real training images for calibration")
    p.add_argument("--io-type", choices=("int8", "uint8"), default="int8", help="integer variants' input/output type")
    p.add_argument("--max-auc-drop", type=float, default=0.01, help="flag a variant losing more validation AUC")
    p.add_argument("--allow-drop", action="store_true", help="exit 0 even when a variant is flagged")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--float-layers", default="0", help="int8: keep the N layers with the worst quantization error "
                                                      "in float, or 'auto' for the fewest that meet --max-auc-drop")
    p.add_argument("--finetune-epochs", type=int, help="int8-qat and int8-pruned: fine-tuning epochs "
                                                       "(default 2 for QAT, 3 for pruning)")
    p.add_argument("--sparsity", type=float, default=0.5, help="int8-pruned: fraction of weights pruned to zero")
    p.add_argument("--data-dir", help="where to find the bundle's training data")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("predict", help="classify images and DICOMs with a medlite .tflite",
                       description="Classify files, folders (recursively) and globs. Writes JSON Lines, one record "
                                   "per image or frame and one per failure. Exit 0: all succeeded; 1: some failed; "
                                   "2: usage error.")
    p.add_argument("model", help="a .tflite written by medlite (its contract is inside)")
    p.add_argument("paths", nargs="+", help="files, folders or glob patterns")
    p.add_argument("--out", help="JSON Lines output file (default: standard output)")
    p.add_argument("--backend", choices=("auto", *BACKENDS), default="auto", help="default auto: best one present")
    p.add_argument("--threads", type=int, help="CPU interpreter threads")
    p.add_argument("--device", help="Edge TPU: usb, usb:N, pci, pci:N or :N")
    p.add_argument("--workers", type=int, default=2, help="decoding worker processes (0: decode in the main "
                                                          "process)")
    p.add_argument("--frames", help="multi-frame DICOM: all, middle or an index (default: the contract's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("bench", help="measure latency and accuracy of models on this device",
                       description="Run models through medlite.edge on a labelled split: load time, latency "
                                   "percentiles, AUC, sensitivity, specificity, agreement with fp32.")
    p.add_argument("models", nargs="+", help=".tflite files or folders of them")
    _data_args(p)
    p.add_argument("--split", default="test", help="split to measure on (default test)")
    p.add_argument("--backend", choices=("all", *BACKENDS), default="all",
                   help="default all: every backend that can run each model here")
    p.add_argument("--threads", type=int, action="append", help="CPU thread count; repeat for several "
                                                                 "(default 1: the stable figure on a shared machine)")
    p.add_argument("--runs", type=int, default=200, help="timed inferences per model (at least 200)")
    p.add_argument("--out", required=True, help="folder for report.json, report.md, report.csv")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", help="render result files as one HTML page with figures",
                       description="Render one or more report.json files (a workstation and a cart, say) into "
                                   "DIR/report.html, self-contained, with AUC against latency (Pareto frontier "
                                   "drawn), operating points, and the tables, device by device.")
    p.add_argument("results", nargs="+", help="report.json files")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("select", help="pick the fastest variant within an accuracy budget from a report",
                       description="Pick the fastest variant and backend (p50) whose AUC is within --max-auc-drop of "
                                   "fp32 and whose sensitivity meets --min-sensitivity. Exits 1 and says which "
                                   "constraint each candidate failed when nothing qualifies.")
    p.add_argument("result", help="report.json from `medlite bench` or `medlite demo`")
    p.add_argument("--max-auc-drop", type=float, default=0.005, help="AUC budget against fp32 (default 0.005)")
    p.add_argument("--min-sensitivity", type=float, default=0.95, help="sensitivity floor at the variant's "
                                                                       "threshold (default 0.95; -1 for none)")
    p.add_argument("--copy-to", help="copy the chosen model file here")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("env", help="versions, CPU and accelerators, for bug reports",
                       description="Print Python, medlite, LiteRT, NumPy, OpenCV and pydicom versions, DICOM "
                                   "decoders, the CPU and its features, and whether each backend is available.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--model", help="also probe each backend with this model (the GPU probe compiles it)")
    p.set_defaults(func=cmd_env)
    return parser


def main(argv: list[str] | None = None) -> int:
    from medlite.edge.errors import MedliteError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"medlite {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except MedliteError as e:
        print(f"medlite {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"medlite {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
