"""``medlite report``: report.json files to one self-contained HTML page with figures."""

from __future__ import annotations

from .shared import EXIT_OK, UsageError


def register(sub, common) -> None:
    p = sub.add_parser("report", parents=[common], help="render result files as one HTML page with figures",
                       description="Render one or more report.json files (a workstation and a cart, say) into "
                                   "DIR/report.html, self-contained, with AUC against latency (Pareto frontier "
                                   "drawn), operating points, and the tables, device by device.")
    p.add_argument("results", nargs="+", help="report.json files")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(run=run)


def render_html(results, out):
    """Write OUT/report.html from ``results``; returns its path. ``demo`` calls this too."""
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        raise UsageError("medlite report draws with matplotlib: pip install 'medlite[report]'") from None
    from medlite.measure.report_html import render

    try:
        return render(results, out)
    except ValueError as e:
        raise UsageError(str(e)) from None


def run(args) -> int:
    print(render_html(args.results, args.out))
    return EXIT_OK
