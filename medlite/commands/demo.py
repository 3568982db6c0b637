"""``medlite demo``: the whole chain on PneumoniaMNIST, from training to the variant to ship.

Each step is the function its own command runs: train, convert, bench, report, select.
"""

from __future__ import annotations

from pathlib import Path

from . import bench, convert, report, select, train
from .shared import EXIT_OK, UsageError, console, data_args, needs_train, positive_int, variants, whole_number


def register(sub, common) -> None:
    p = sub.add_parser("demo", parents=[common], help="train, convert every variant, measure here, report, select",
                       description="The whole chain on PneumoniaMNIST: train the default recipe, convert every "
                                   "variant, run each on the test split through medlite.edge, write report.json, "
                                   ".md, .csv and .html, and pick the fastest variant within 0.005 AUC of fp32 "
                                   "with sensitivity at least 0.95.")
    data_args(p, default="pneumoniamnist")
    p.add_argument("--out", default="medlite-out", help="output folder (default ./medlite-out)")
    p.add_argument("--epochs", type=positive_int, help="cap the training epochs (default: the recipe's)")
    p.add_argument("--runs", type=whole_number(1), default=200, help="timed inferences per model (default 200)")
    p.add_argument("--threads", type=positive_int, help="CPU interpreter threads for the bench (default 1)")
    p.add_argument("--variants", default="all", help="variants to convert and measure (default all)")
    p.set_defaults(run=run)


def run(args) -> int:
    needs_train()
    run_demo(args.out, data=args.data, data_dir=args.data_dir, epochs=args.epochs, runs=args.runs,
             threads=args.threads, variants=variants(args.variants), con=console(args))
    return EXIT_OK


def run_demo(out: str | Path = "medlite-out", *, data: str = "pneumoniamnist", data_dir=None,
             epochs: int | None = None, variants=None, runs: int = 200, threads: int | None = None,
             max_auc_drop: float = 0.005, min_sensitivity: float = 0.95, con=None) -> dict:
    """Train the default recipe, convert every variant, bench them here, report, and select; returns the report."""
    from rich.console import Console

    from medlite.convert.pipeline import ConvertOptions
    from medlite.convert.variants import NAMES, REFERENCE
    from medlite.measure import datasets
    from medlite.train.config import DEFAULT_FAMILY, load_config
    from medlite.train.pipeline import load_data_for

    con = con or Console(stderr=True)
    out = Path(out)
    variants = list(variants or NAMES)
    config = load_config(family=DEFAULT_FAMILY)
    if epochs:
        config = config.updated(epochs=epochs)
    con.print(f"[bold]1/4 train[/] {config.model} on {data} (up to {config.epochs} epochs, early stop on "
              "validation AUC)")
    bundle, _ = train.train_with_progress(data, config, out / "bundle", con, data_dir=data_dir,
                                          data=load_data_for(data, config, data_dir))
    con.print(f"[bold]2/4 convert[/] {', '.join(variants)} (calibrated on real training images)")
    manifest = convert.convert_with_progress(bundle, out / "models", ConvertOptions(
        variants=variants, force=True, allow_drop=True, data_dir=data_dir), con)
    con.print(f"[bold]3/4 measure[/] on the test split through medlite.edge ({runs} timed runs each)")
    # The reference is always converted, and measured too: selection weighs every variant against it.
    paths = [str(out / "models" / e["file"]) for e in manifest["variants"] if e["variant"] in (*variants, REFERENCE)]
    result, written = bench.measure(paths, "test", datasets.load(data, data_dir), out, con, threads=[threads],
                                    runs=runs)
    con.print("[bold]4/4 report and select[/]")
    try:
        con.print(f"   {report.render_html([written['json']], out)}")
    except UsageError as e:  # no matplotlib: the other reports stand
        con.print(f"   (no HTML report: {e})")
    select.choose(result, max_auc_drop, min_sensitivity)
    con.print(f"report: {written['json']}, {written['md']}, {written['csv']}")
    return result
