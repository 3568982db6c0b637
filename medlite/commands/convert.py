"""``medlite convert``: a bundle to validated .tflite variants."""

from __future__ import annotations

from .shared import EXIT_FAILED, EXIT_OK, UsageError, needs_train, signing_key, variants, whole_number


def register(sub, common) -> None:
    p = sub.add_parser("convert", parents=[common], help="quantize a bundle to validated .tflite variants",
                       description="Convert a bundle to TFLite variants, validate each through medlite.edge on the "
                                   "validation split, re-choose its operating point, and embed its contract.")
    p.add_argument("bundle", help="bundle folder from `medlite train`")
    p.add_argument("--variants", default="fp32,int8", help="comma-separated: fp32, fp16, dynamic, int8, int16x8, "
                                                          "int8-qat, int8-pruned, or 'all' (default fp32,int8)")
    p.add_argument("--out", required=True, help="output folder (must not exist unless --force)")
    p.add_argument("--calibration-images", type=whole_number(1), default=1000, help="real training images for calibration "
                                                                       "(default 1000)")
    p.add_argument("--io-type", choices=("int8", "uint8"), default="int8", help="integer variants' input/output type")
    p.add_argument("--max-auc-drop", type=float, default=0.01, help="flag a variant losing more validation AUC")
    p.add_argument("--allow-drop", action="store_true", help="exit 0 even when a variant is flagged")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--float-layers", default="0", help="int8: keep the N layers with the worst quantization error "
                                                      "in float, or 'auto' for the fewest that meet --max-auc-drop")
    p.add_argument("--finetune-epochs", type=whole_number(1), help="int8-qat and int8-pruned: fine-tuning epochs "
                                                       "(default 1 for each)")
    p.add_argument("--sparsity", type=float, default=0.5, help="int8-pruned: fraction of weights pruned to zero")
    p.add_argument("--data-dir", help="where to find the bundle's training data")
    p.add_argument("--sign-key", type=signing_key, metavar="PRIVATE.pem",
                   help="sign every model written with this PEM elliptic-curve private key (NAME.tflite.sig beside "
                        "it, OpenSSF model-signing's format); carts started with --trust run only signed models")
    p.set_defaults(run=run)


def convert_with_progress(bundle, out, options, console) -> dict:
    """Convert every variant of ``options``, saying which one is under way; returns the manifest.
    ``demo`` calls this too."""
    from medlite.convert.pipeline import convert_bundle

    return convert_bundle(bundle, out, options, progress=lambda v: console.print(f"   converting {v}"))


def run(args) -> int:
    needs_train()
    from medlite.convert.finetune import FineTune
    from medlite.convert.pipeline import ConvertOptions, summary_markdown

    from .shared import console as make_console

    names = variants(args.variants)
    console = make_console(args)
    float_layers = args.float_layers
    if float_layers != "auto" and not float_layers.isdigit():
        raise UsageError(f"--float-layers takes a count or 'auto', got {float_layers!r}")
    if not 0 < args.sparsity < 1:
        raise UsageError(f"--sparsity must be between 0 and 1, got {args.sparsity}")
    epochs = {"qat_epochs": args.finetune_epochs, "prune_epochs": args.finetune_epochs} if args.finetune_epochs else {}
    options = ConvertOptions(variants=names, n_calibration=args.calibration_images, io_type=args.io_type,
                             max_auc_drop=args.max_auc_drop, allow_drop=args.allow_drop, force=args.force,
                             data_dir=args.data_dir, float_layers=float_layers,
                             finetune=FineTune(sparsity=args.sparsity, **epochs), sign_key=args.sign_key)
    manifest = convert_with_progress(args.bundle, args.out, options, console)
    console.print(summary_markdown(manifest))
    flagged = [e["variant"] for e in manifest["variants"] if e["flagged"]]
    if flagged:
        console.print(f"[red]AUC drop above {args.max_auc_drop} on validation: {', '.join(flagged)}")
        return EXIT_OK if args.allow_drop else EXIT_FAILED
    return EXIT_OK
