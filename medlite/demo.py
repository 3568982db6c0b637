"""``medlite demo``: train, convert to fp32 and int8, measure both on this machine, write the report."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


def run_demo(out: str | Path = "medlite-out", *, data: str = "pneumoniamnist", data_dir=None, epochs: int | None = None,
             variants=("fp32", "int8"), runs: int = 200, threads: int | None = None,
             console: Console | None = None) -> dict:
    """The vertical slice end to end; returns the report (also written to ``out``)."""
    from medlite.convert.pipeline import ConvertOptions, convert_bundle
    from medlite.edge import datasets
    from medlite.edge.bench import bench
    from medlite.edge.device import device_info
    from medlite.edge.report import build_report, rich_table, write_report
    from medlite.train.config import load_config
    from medlite.train.pipeline import load_data_for, train_bundle

    console = console or Console(stderr=True)
    out = Path(out)
    config = load_config(family="small_cnn")
    if epochs:
        config = config.updated(epochs=epochs)
    console.print(f"[bold]1/3 train[/] {config.model} on {data} (up to {config.epochs} epochs, early stop on "
                  "validation AUC)")
    training_data = load_data_for(data, config, data_dir)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("epoch {task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("training", total=config.epochs)

        def on_epoch(epoch, total, row):
            bar.update(task, completed=epoch, description=f"training: val AUC {row['val_auc']:.4f}")

        bundle, metrics = train_bundle(data, config, out / "bundle", data_dir=data_dir, data=training_data,
                                       progress=on_epoch)
    console.print(f"   bundle {bundle}: validation AUC {metrics['validation']['auc']:.4f}, threshold "
                  f"{metrics['validation'].get('threshold', float('nan')):.4f}")
    console.print(f"[bold]2/3 convert[/] {', '.join(variants)} (int8 calibrated on real training images)")
    manifest = convert_bundle(bundle, out / "models", ConvertOptions(variants=list(variants), force=True,
                                                                      data_dir=data_dir),
                              progress=lambda v: console.print(f"   {v}"))
    console.print(f"[bold]3/3 measure[/] on the test split through medlite.edge ({runs} timed runs each)")
    ds = datasets.load(data, data_dir)
    split = ds.splits["test"]
    paths = [str(out / "models" / e["file"]) for e in manifest["variants"] if e["variant"] in variants]
    rows = bench(paths, split, backend="cpu", threads=threads, runs=runs,
                 progress=lambda p: console.print(f"   {Path(p).name}"))
    report = build_report(rows, {"name": ds.name, "split": "test", "n": len(split.labels), "sha256": ds.sha256},
                          device_info())
    written = write_report(report, out)
    Console().print(rich_table(report))
    console.print(f"report: {written['json']}, {written['md']}")
    return report
