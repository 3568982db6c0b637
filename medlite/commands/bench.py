"""``medlite bench``: latency and accuracy of models on this device, as report.json, .md and .csv."""

from __future__ import annotations

from .shared import (EXIT_OK, UsageError, console, data_args, needs_ray, positive_int, trust_args, trusted,
                     whole_number)


def register(sub, common) -> None:
    from medlite.edge.backends import NAMES as BACKENDS

    p = sub.add_parser("bench", parents=[common], help="measure latency and accuracy of models on this device",
                       description="Run models through medlite.edge on a labelled split: load time, latency "
                                   "percentiles, AUC, sensitivity, specificity, agreement with fp32.")
    p.add_argument("models", nargs="+", help=".tflite files or folders of them")
    data_args(p)
    p.add_argument("--split", default="test", help="split to measure on (default test)")
    p.add_argument("--backend", choices=("all", *BACKENDS), default="all",
                   help="default all: every backend that can run each model here")
    p.add_argument("--threads", type=positive_int, action="append",
                   help="CPU thread count; repeat for several (default 1: the stable figure on a shared machine)")
    p.add_argument("--runs", type=whole_number(1), default=200, help="timed inferences per model (at least 200)")
    p.add_argument("--out", required=True, help="folder for report.json, report.md, report.csv")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default): this device; ray: score the split on a Ray cluster (with --accuracy-only; "
                        "pip install 'medlite[ray]')")
    p.add_argument("--accuracy-only", action="store_true",
                   help="the accuracy side alone (AUC with its interval, sensitivity, specificity, agreement with "
                        "fp32), in report.json's shape without latency; latency is a measurement of one device")
    p.add_argument("--address", help="--engine ray: the cluster to join (default: start a local one)")
    p.add_argument("--actors", type=whole_number(1), help="--engine ray: actors per model (default: the cluster's "
                                                         "CPUs)")
    trust_args(p)
    p.set_defaults(run=run)


def measure(paths: list[str], split_name: str, ds, out, con, *, backends=None, threads=(None,), runs: int = 200,
            signed_by: dict | None = None):
    """Bench ``paths`` on one split of ``ds``, write the report files, print the table; returns (report, paths).
    ``demo`` calls this too."""
    from rich.console import Console

    from medlite.edge.device import device_info
    from medlite.measure.bench import bench
    from medlite.measure.report import build_report, rich_table, write_report

    split = ds.splits[split_name]
    rows, skipped = bench(paths, split, backend_names=backends, threads_list=list(threads), runs=runs,
                          progress=lambda text: con.print(f"   {text}"))
    if not rows:
        raise UsageError("no model could run on the chosen backend(s): " +
                         "; ".join(f"{b}: {why}" for b, why in skipped.items()))
    from medlite.measure.bench import gallery

    report = build_report(rows, {"name": ds.name, "split": split_name, "n": len(split.labels),
                                 "sha256": ds.sha256}, device_info(), skipped)
    report["gallery"] = gallery(rows, split)
    written = _write(report, out, signed_by)
    for b, why in skipped.items():
        con.print(f"[dim]backend {b} not measured: {why}")
    return report, written


def run(args) -> int:
    from pathlib import Path

    from medlite.measure import datasets

    paths = []
    for p in args.models:
        paths += sorted(str(f) for f in Path(p).glob("*.tflite")) if Path(p).is_dir() else [p]
    if not paths:
        raise UsageError(f"no .tflite models in {' '.join(args.models)}")
    if args.engine == "ray" and not args.accuracy_only:
        raise UsageError("--engine ray measures accuracy only (latency belongs to one device): add --accuracy-only")
    if args.accuracy_only and args.engine != "ray":
        raise UsageError("--accuracy-only is for --engine ray; a local bench measures both")
    if (args.address or args.actors) and args.engine != "ray":
        raise UsageError("--address and --actors are for --engine ray")
    if args.runs < 200:
        raise UsageError(f"--runs must be at least 200 for stable percentiles, got {args.runs}")
    ds = datasets.load(args.data, args.data_dir)
    if args.split not in ds.splits:
        raise UsageError(f"{ds.path} has no {args.split!r} split (it has {', '.join(ds.splits)})")
    con = console(args)
    signed_by = _signers(paths, trusted(args), con)
    if args.engine == "ray":
        written = _on_ray(paths, args, ds, con, signed_by)
        con.print(f"report: {written['json']}")
        return EXIT_OK
    _, written = measure(paths, args.split, ds, args.out, con,
                         backends=None if args.backend == "all" else [args.backend], threads=args.threads or [None],
                         runs=args.runs, signed_by=signed_by)
    con.print(f"report: {written['json']}")
    return EXIT_OK


def _signers(paths: list[str], keys: list, con) -> dict | None:
    """Each model's trusted signer, every model checked before any is run (a refused one leaves no report);
    None without trusted keys."""
    if not keys:
        return None
    from medlite.edge.runtime import signer

    signed_by = {p: signer(p, keys) for p in paths}
    con.print(f"{len(paths)} model(s) signed by trusted keys: {', '.join(sorted(set(signed_by.values())))}")
    return signed_by


def _write(report: dict, out, signed_by: dict | None) -> dict:
    """Write report.json, .md and .csv (with each model's signer, where checked) and print the table."""
    from rich.console import Console

    from medlite.measure.report import rich_table, write_report

    if signed_by:
        report["signed_by"] = signed_by
    written = write_report(report, out)
    Console(width=max(Console().width, 120)).print(rich_table(report))
    return written


def _on_ray(paths: list[str], args, ds, con, signed_by: dict | None) -> dict:
    """The accuracy-only report, scored on a Ray cluster; written like a local bench's."""
    from medlite.cluster import ray_bench
    from medlite.edge.device import device_info
    from medlite.measure.report import build_report

    ray_predict = needs_ray()
    threads = (args.threads or [None])[0]
    with ray_predict.session(args.address, args.verbose):
        actors = args.actors or ray_predict.default_actors(threads)
        rows = ray_bench.accuracy_rows(paths, ds.splits[args.split], actors=actors, threads=threads,
                                       progress=lambda text: con.print(f"   {text}"))
    report = build_report(rows, {"name": ds.name, "split": args.split, "n": len(ds.splits[args.split].labels),
                                 "sha256": ds.sha256}, device_info(), {})
    report.update(accuracy_only=True, engine={"name": "ray", "address": args.address or "local", "actors": actors})
    return _write(report, args.out, signed_by)
