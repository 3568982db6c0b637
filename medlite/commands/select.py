"""``medlite select``: the fastest variant within an accuracy budget, from a report."""

from __future__ import annotations

import json

from .shared import EXIT_FAILED, EXIT_OK, UsageError


def register(sub, common) -> None:
    p = sub.add_parser("select", parents=[common], help="pick the fastest variant within an accuracy budget",
                       description="Pick the fastest variant and backend (p50) whose AUC is within --max-auc-drop of "
                                   "fp32 and whose sensitivity meets --min-sensitivity. Exits 1 and says which "
                                   "constraint each candidate failed when nothing qualifies.")
    p.add_argument("result", help="report.json from `medlite bench` or `medlite demo`")
    p.add_argument("--max-auc-drop", type=float, default=0.005, help="AUC budget against fp32 (default 0.005)")
    p.add_argument("--min-sensitivity", type=float, default=0.95, help="sensitivity floor at the variant's "
                                                                       "threshold (default 0.95; -1 for none)")
    p.add_argument("--copy-to", help="copy the chosen model file here")
    p.set_defaults(run=run)


def choose(report: dict, max_auc_drop: float, min_sensitivity: float | None, source: str = "report"):
    """The selection, printed: the choice and why, or each candidate's failed constraint. ``demo`` calls this."""
    from medlite.measure.select import select

    try:
        sel = select(report, max_auc_drop, min_sensitivity)
    except ValueError as e:
        raise UsageError(f"{source}: {e}") from None
    if sel.chosen is None:
        print(f"nothing qualifies (fp32 AUC {sel.reference_auc:.4f}):")
        for c in sel.candidates:
            print(f"  {c.name}: {'; '.join(c.failures)}")
    else:
        print(sel.explanation)
    return sel


def run(args) -> int:
    import shutil
    from pathlib import Path

    path = Path(args.result)
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: not a readable report.json ({e})") from None
    if isinstance(report, dict) and report.get("accuracy_only"):
        raise UsageError(f"{path}: an accuracy-only report (bench --accuracy-only) has no latency to choose by; "
                         "bench the models on the cart")
    sel = choose(report, args.max_auc_drop, None if args.min_sensitivity < 0 else args.min_sensitivity, str(path))
    if sel.chosen is None:
        return EXIT_FAILED
    if args.copy_to:
        model = Path(sel.chosen.row["model"])
        if not model.is_absolute() and not model.exists():
            model = path.parent / model
        if not model.exists():
            raise UsageError(f"{model}: the chosen model file is not there to copy")
        shutil.copy(model, args.copy_to)
        print(f"copied {model} to {args.copy_to}")
    return EXIT_OK
