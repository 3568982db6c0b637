"""``medlite demo``: the whole chain on PneumoniaMNIST, from training to the variant to ship."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from medlite.progress import epoch_progress


def run_demo(out: str | Path = "medlite-out", *, data: str = "pneumoniamnist", data_dir=None, epochs: int | None = None,
             variants=None, runs: int = 200, threads: int | None = None, max_auc_drop: float = 0.005,
             min_sensitivity: float = 0.95, console: Console | None = None) -> dict:
    """Train the default recipe, convert every variant, bench them here, report, and select; returns the report."""
    from medlite.convert.pipeline import ConvertOptions, convert_bundle
    from medlite.edge import datasets
    from medlite.edge.bench import bench
    from medlite.edge.device import device_info
    from medlite.edge.report import build_report, rich_table, write_report
    from medlite.edge.select import select
    from medlite.edge.variants import NAMES
    from medlite.train.config import DEFAULT_FAMILY, load_config
    from medlite.train.pipeline import load_data_for, train_bundle

    console = console or Console(stderr=True)
    out = Path(out)
    variants = list(variants or NAMES)
    config = load_config(family=DEFAULT_FAMILY)
    if epochs:
        config = config.updated(epochs=epochs)
    console.print(f"[bold]1/4 train[/] {config.model} on {data} (up to {config.epochs} epochs, early stop on "
                  "validation AUC)")
    training_data = load_data_for(data, config, data_dir)
    with epoch_progress(console, "training", config.epochs) as on_epoch:
        bundle, metrics = train_bundle(data, config, out / "bundle", data_dir=data_dir, data=training_data,
                                       progress=on_epoch)
    console.print(f"   bundle {bundle}: validation AUC {metrics['validation']['auc']:.4f}, threshold "
                  f"{metrics['validation'].get('threshold', float('nan')):.4f}")
    console.print(f"[bold]2/4 convert[/] {', '.join(variants)} (calibrated on real training images)")
    manifest = convert_bundle(bundle, out / "models", ConvertOptions(variants=variants, force=True, allow_drop=True,
                                                                      data_dir=data_dir),
                              progress=lambda v: console.print(f"   {v}"))
    console.print(f"[bold]3/4 measure[/] on the test split through medlite.edge ({runs} timed runs each)")
    ds = datasets.load(data, data_dir)
    split = ds.splits["test"]
    paths = [str(out / "models" / e["file"]) for e in manifest["variants"] if e["variant"] in variants]
    rows, skipped = bench(paths, split, threads_list=[threads], runs=runs,
                          progress=lambda text: console.print(f"   {text}"))
    report = build_report(rows, {"name": ds.name, "split": "test", "n": len(split.labels), "sha256": ds.sha256},
                          device_info(), skipped)
    written = write_report(report, out)
    console.print("[bold]4/4 report and select[/]")
    try:
        import matplotlib

        matplotlib.use("Agg")
        from medlite.report_html import render

        console.print(f"   {render([written['json']], out)}")
    except ImportError:
        console.print("   (no HTML report: pip install 'medlite[report]' for matplotlib)")
    Console(width=max(Console().width, 120)).print(rich_table(report))
    for b, why in skipped.items():
        console.print(f"[dim]backend {b} not measured: {why}")
    sel = select(report, max_auc_drop, min_sensitivity)
    if sel.chosen:
        console.print(f"[bold green]selected:[/] {sel.explanation}")
    else:
        console.print("[bold red]no variant meets AUC within "
                      f"{max_auc_drop} of fp32 and sensitivity >= {min_sensitivity}:[/]")
        for c in sel.candidates:
            console.print(f"   {c.name}: {'; '.join(c.failures)}")
    console.print(f"report: {written['json']}, {written['md']}, {written['csv']}")
    return report
