"""``medlite predict``: classify images and DICOMs, one JSON Lines record each, written as they come."""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import sys
import threading
from pathlib import Path

from .shared import (EXIT_FAILED, EXIT_OK, UsageError, console, load_model, model_args, needs_ray, whole_number,
                     writable_file)

PREVIEW = 1024  # the longest side of an overlay


def register(sub, common) -> None:
    p = sub.add_parser("predict", parents=[common], help="classify images and DICOMs with a medlite .tflite",
                       description="Classify files, folders (recursively) and globs. Writes JSON Lines, one record "
                                   "per image or frame and one per failure, each as soon as it is known. Exit 0: "
                                   "all succeeded; 1: some failed; 2: usage error; 3: the model cannot run here.")
    model_args(p)
    p.add_argument("paths", nargs="+", help="files, folders or glob patterns")
    p.add_argument("--out", type=writable_file, help="JSON Lines output file (default: standard output)")
    p.add_argument("--workers", type=whole_number(0, 64), default=2,
                   help="decoding worker processes, 0 to 64 (0: decode in the main process)")
    p.add_argument("--ignore-intended-use", action="store_true",
                   help="run DICOMs outside the model's intended use too; each record then says so")
    p.add_argument("--heatmap", type=Path, metavar="DIR",
                   help="write each result's class activation map (8-bit PNG at the image's own size) to DIR; "
                        "records gain heatmap, peak and box")
    p.add_argument("--overlay", type=Path, metavar="DIR",
                   help="write a colour overlay of the map on the image (for a person to look at) to DIR")
    p.add_argument("--full-decode", action="store_true",
                   help="decode JPEG 2000 DICOMs at full resolution (default: the smallest resolution level "
                        "still as large as the model's input)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default): this machine, --workers decoding processes; ray: a Ray cluster reads, "
                        "decodes and scores (pip install 'medlite[ray]'); paths may then also be s3:// or gs:// "
                        "URIs")
    p.add_argument("--address", help="--engine ray: the cluster to join (auto: the one `ray start` began on "
                                     "this machine; default: start a local one with this machine's CPUs)")
    p.add_argument("--actors", type=whole_number(1), help="--engine ray: actors that each load the model once "
                                                         "(default: the cluster's CPUs / --threads)")
    p.set_defaults(run=run)


def run(args) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from medlite.edge import batch
    from medlite.edge.backends.litert import runtime

    if args.engine == "ray" and (args.heatmap or args.overlay):
        raise UsageError("--heatmap and --overlay write pictures on this machine; use them with --engine local")
    if (args.address or args.actors) and args.engine != "ray":
        raise UsageError("--address and --actors are for --engine ray")
    model = load_model(args, ignore_intended_use=args.ignore_intended_use,
                       full_decode=args.full_decode)
    uris = [p for p in args.paths if "://" in p] if args.engine == "ray" else []
    files, missing = batch.expand([p for p in args.paths if p not in uris])
    files += uris
    con = console(args)
    for a in model.attempts:
        if not a.ok:
            con.print(f"[dim]backend {a.backend} not used: {a.reason}")
    con.print(f"model {args.model} on [bold]{model.backend}[/] ({runtime()}); {len(files)} file(s)")
    if model.signed_by:
        con.print(f"signed by trusted key {model.signed_by}")
    use = model.contract.intended_use.describe()
    con.print(f"intended use: {use}" + (" [yellow](ignored for this run)" if args.ignore_intended_use else ""))
    draw = _drawer(model, args)
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    counts = {"ok": 0, "rejected": 0, "error": 0, "foreign": 0}
    labels: dict[str, int] = {}
    done = 0
    try:
        with Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), console=con,
                      disable=args.quiet) as bar, _Held() as held, contextlib.ExitStack() as stack:
            task = bar.add_task("predict", total=len(files))
            last_file = None
            results = (batch.run(model, files, workers=args.workers, draw=draw, preview=PREVIEW if args.overlay else 0)
                       if args.engine == "local" else stack.enter_context(_on_ray(args, model, files, con)))
            for rec in itertools.chain(missing, results):
                held.busy = True
                # One line per record, flushed, so an interrupted run leaves a valid JSON Lines file.
                out.write(json.dumps(rec) + "\n")
                out.flush()
                counts[rec["status"]] += 1
                if rec["status"] == "ok":
                    labels[rec["label"]] = labels.get(rec["label"], 0) + 1
                    counts["foreign"] += rec["in_distribution"] is False
                elif rec["status"] == "rejected":
                    con.print(f"[yellow]{rec['file']}: rejected: {rec['reason']}")
                else:
                    con.print(f"[red]{rec['file']}: {rec['error']}")
                if rec["file"] != last_file and rec["file"] in files:
                    bar.advance(task)
                    done += 1
                    last_file = rec["file"]
                held.release()
    except KeyboardInterrupt:
        # Even under --quiet: a stopped run says how far it got (every line before it is in the output).
        print(f"medlite predict: stopped after {done} of {len(files)} file(s); {_summary(counts, labels)}",
              file=sys.stderr)
        raise
    finally:
        if out is not sys.stdout:
            out.close()
    con.print(_summary(counts, labels))
    return EXIT_OK if counts["error"] == 0 else EXIT_FAILED


@contextlib.contextmanager
def _on_ray(args, model, files: list[str], con):
    """The records of ``files`` scored on a Ray cluster (medlite.cluster.ray_predict), Ray shut down after
    where this run started it."""
    import hashlib

    from medlite.edge.errors import ModelError

    ray_predict = needs_ray()
    data = Path(model.path).read_bytes()  # the bytes load() checked, shipped to the actors
    if hashlib.sha256(data).hexdigest() != model.sha256:
        raise ModelError(model.path, "the file changed while it was being loaded; run again")
    # Ray prints its cluster's error messages (an actor that died) on sys.stdout, where the records may go: they
    # go to standard error instead (the records' file object was taken before).
    with contextlib.redirect_stdout(sys.stderr), ray_predict.session(args.address, args.verbose):
        actors = args.actors or ray_predict.default_actors(args.threads)
        con.print(f"engine ray: {actors} actor(s) of {args.threads or 1} CPU(s)"
                  + (f", cluster {args.address}" if args.address else ", a local cluster"))
        options = {"backend": args.backend, "threads": args.threads, "device": args.device, "frames": args.frames,
                   "ignore_intended_use": args.ignore_intended_use, "full_decode": args.full_decode}
        yield ray_predict.run(data, files, actors=actors, options=options, signed_by=model.signed_by)


class _Held:
    """SIGINT and SIGTERM held off while a record is written and counted (``busy``), so that a stopped run's
    summary counts exactly the lines its output holds; one that came meanwhile acts at ``release``. (Between
    the write and the count, a signal once left a line the summary did not count.)"""

    def __init__(self):
        self.busy, self.pending, self.previous = False, None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # where Python runs signal handlers
            for sig in (signal.SIGINT, signal.SIGTERM):
                handler = signal.getsignal(sig)
                if callable(handler):  # an ignored SIGINT (a background job's) stays ignored
                    self.previous[sig] = handler
                    signal.signal(sig, self._on)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _on(self, sig, frame):
        if self.busy and self.pending is None:  # a second one acts at once (a write blocked on a full pipe)
            self.pending = (sig, frame)
        else:
            self.previous[sig](sig, frame)

    def release(self):
        self.busy = False
        if self.pending is not None:
            sig, frame = self.pending
            self.pending = None
            self.previous[sig](sig, frame)


def _drawer(model, args):
    """The callback that writes each result's heatmap and overlay and names them in its record; None
    without --heatmap or --overlay."""
    if not (args.heatmap or args.overlay):
        return None
    if not model.has_heatmap:
        raise UsageError(f"{args.model} gives no feature map, so no heatmap: its head is not global average "
                         "pooling then dense layers, or it was converted before medlite made heatmaps")
    import cv2

    from medlite.edge.heatmap import overlay

    for folder in (args.heatmap, args.overlay):
        if folder:
            folder.mkdir(parents=True, exist_ok=True)
    count = itertools.count()

    def draw(rec, prediction, frame):
        stem = Path(rec["file"] or "image").stem + (f"_frame{rec['frame']}" if rec.get("frame") is not None else "")
        name = f"{next(count):06d}_{stem}.png"  # numbered: two folders may hold files of the same name
        if args.heatmap:
            cv2.imwrite(str(args.heatmap / name), prediction.heatmap)
            rec["heatmap"] = str(args.heatmap / name)
        if args.overlay:
            cv2.imwrite(str(args.overlay / name), overlay(frame.pixels, prediction.heatmap))
            rec["overlay"] = str(args.overlay / name)

    return draw


def _summary(counts: dict, labels: dict) -> str:
    summary = ", ".join(f"{k} {v}" for k, v in sorted(labels.items())) or "none"
    return (f"{counts['ok']} result(s), {counts['foreign']} of them outside the training distribution; "
            f"{counts['rejected']} rejected (outside the intended use); {counts['error']} failure(s); "
            f"labels: {summary}")
