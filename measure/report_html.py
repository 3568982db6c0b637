"""``medlite report``: result files to one self-contained HTML page and PNG figures (needs matplotlib)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from .report import flat_row, pareto


def _device_name(report: dict) -> str:
    d = report["device"]
    return f"{d.get('cpu', '?')} ({d.get('machine', '?')}, {d.get('cores', '?')} cores)"


def _label(row: dict) -> str:
    return f"{row['variant']}/{row['backend']}" + (f"/{row['threads']}t" if row.get("threads") else "")


def _numbered(ax, points: list[tuple[float, float]], rows: list[dict], first: int) -> list[str]:
    """Numbers beside the points instead of names, which overlap: points that fall within a few pixels of
    each other share one label ("2, 3"), and a label that would cover another moves up, with a thin line to
    its point. Returns the key, "N  variant/backend/threads", for the legend."""
    ax.figure.canvas.draw()  # the axes' limits, so that distances are in the figure's pixels
    renderer = ax.figure.canvas.get_renderer()
    at = ax.transData.transform(points)
    groups: list[list[int]] = []
    for i, p in enumerate(at):
        near = next((g for g in groups if ((at[g[0]] - p) ** 2).sum() < 14 ** 2), None)
        (near.append(i) if near is not None else groups.append([i]))
    placed = []
    for g in groups:
        label = ax.annotate(", ".join(str(first + i) for i in g), points[g[0]], textcoords="offset points",
                            xytext=(6, 5), fontsize=9, fontweight="bold")
        box = label.get_window_extent(renderer)
        for _ in range(len(groups)):  # at most one line up for each label already placed
            if not any(box.overlaps(b) for b in placed):
                break
            label.xyann = (label.xyann[0], label.xyann[1] + 11)  # one line up, in points
            box = label.get_window_extent(renderer)
        if label.xyann[1] > 5:  # moved: a thin line to its point
            ax.annotate("", points[g[0]], xytext=(label.xyann[0], label.xyann[1] + 4), textcoords="offset points",
                        arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.5})
        placed.append(box)
    return [f"{first + i}  {_label(r)}" for i, r in enumerate(rows)]


def _key(ax, entries: list[str], colours: list[str]) -> None:
    """The numbered key as the legend, outside the axes on the right."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="none", marker="o", color=c, label=e) for e, c in zip(entries, colours)]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0,
              title="rows", title_fontsize=8)


def _figure_auc_latency(reports: list[dict]):
    """Test AUC with its 95% interval against p50 latency: differences smaller than the interval look it."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 5.5), dpi=110)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    placed = []
    for i, rep in enumerate(reports):
        rows, c = rep["rows"], colours[i % len(colours)]
        x = [r["latency_ms"]["p50"] for r in rows]
        y = [r["metrics"]["auc"] for r in rows]
        ci = [r["metrics"].get("auc_ci95") or [a, a] for r, a in zip(rows, y)]
        ax.errorbar(x, y, yerr=[[a - lo for a, (lo, _) in zip(y, ci)], [hi - a for a, (_, hi) in zip(y, ci)]],
                    fmt="o", color=c, ecolor=c, elinewidth=1, capsize=3, alpha=0.8, label=_device_name(rep))
        front = pareto(rows)
        ax.plot([r["latency_ms"]["p50"] for r in front], [r["metrics"]["auc"] for r in front], "--", color=c,
                linewidth=1, alpha=0.6)
        placed += [(r, (px, py), c) for r, px, py in zip(rows, x, y)]
    ax.set_xscale("log")
    ax.margins(x=0.15)  # room for the labels of the outermost points
    ax.set_xlabel("p50 latency per image, ms (log scale)")
    ax.set_ylabel("test AUC, with its 95% bootstrap interval")
    ax.set_title("Accuracy against latency (dashed: the Pareto frontier)")
    ax.grid(True, which="both", alpha=0.3)
    keys = _numbered(ax, [p for _, p, _ in placed], [r for r, _, _ in placed], 1)
    _key(ax, keys, [c for *_, c in placed])
    fig.tight_layout()
    return fig


def _figure_operating_point(reports: list[dict]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 5.5), dpi=110)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    placed = []
    for i, rep in enumerate(reports):
        c = colours[i % len(colours)]
        rows = [r for r in rep["rows"] if r["metrics"].get("sensitivity") is not None]
        pts = [(1 - r["metrics"]["specificity"], r["metrics"]["sensitivity"]) for r in rows]
        if pts:
            ax.scatter(*zip(*pts), s=40, color=c, alpha=0.8, label=_device_name(rep))
        placed += [(r, p, c) for r, p in zip(rows, pts)]
    ax.set_xlabel("1 - specificity (false positive rate) at each variant's threshold")
    ax.set_ylabel("sensitivity at each variant's threshold")
    ax.set_title("Operating points (thresholds chosen on validation)")
    ax.grid(True, alpha=0.3)
    if placed:  # the corner of the ROC plane that holds them, so that small differences look small
        fpr, sens = zip(*(p for _, p, _ in placed))
        ax.set_xlim(0, min(1.0, max(fpr) + 0.1))
        ax.set_ylim(max(0.0, min(sens) - 0.1), 1.01)
        keys = _numbered(ax, [p for _, p, _ in placed], [r for r, _, _ in placed], 1)
        _key(ax, keys, [c for *_, c in placed])
    fig.tight_layout()
    return fig


def _png(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path.write_bytes(buf.getvalue())
    return base64.b64encode(buf.getvalue()).decode()


def _table(report: dict) -> str:
    head = ("variant", "backend", "threads", "size KiB", "load ms", "p50 ms", "p90 ms", "p99 ms", "AUC", "AUC 95% CI",
            "sensitivity", "specificity", "accuracy", "threshold", "agreement with fp32", "peak RSS MB")
    out = ["<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"]
    front = {id(r) for r in pareto(report["rows"])}
    for r in report["rows"]:
        f, m = flat_row(r), r["metrics"]
        ci = m.get("auc_ci95")
        cells = (f["variant"], f["backend"], f["threads"] or "default", f"{f['size_bytes'] / 1024:.1f}",
                 f"{f['load_ms']:.1f}", f"{f['p50_ms']:.4f}", f"{f['p90_ms']:.4f}", f"{f['p99_ms']:.4f}",
                 f"{m['auc']:.4f}", f"{ci[0]:.4f}-{ci[1]:.4f}" if ci else "-",
                 *(f"{m[k]:.3f}" if m.get(k) is not None else "-" for k in ("sensitivity", "specificity", "accuracy")),
                 f"{m['threshold']:.4f}" if m.get("threshold") is not None else "-",
                 f"{m['agreement_with_fp32']:.3f}" if m.get("agreement_with_fp32") is not None else "-",
                 f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else "-")
        cls = ' class="pareto"' if id(r) in front else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return "\n".join(out) + "</tbody></table>"


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;
font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:nth-child(-n+2),th{text-align:left}
tr.pareto{background:#eef7ee}img{max-width:100%;border:1px solid #ddd}.muted{color:#666}
.gallery{display:flex;flex-wrap:wrap;gap:12px}.case{border:1px solid #ddd;padding:6px;width:370px}
.case figure{display:inline-block;vertical-align:top;width:170px;margin:4px}.case figcaption{font-size:12px}"""


def _per_class(report: dict) -> str:
    """Each multi-class row's decision class by class, and its confusion matrix."""
    out = []
    for r in report["rows"]:
        m, labels = r["metrics"], r.get("labels")
        if "per_class" not in m or not labels:
            continue
        rates = "".join(f"<tr><td>{html.escape(lab)}</td><td>{_num(c['sensitivity'])}</td>"
                        f"<td>{_num(c['specificity'])}</td><td>{auc:.3f}</td></tr>"
                        for lab, c, auc in zip(labels, m["per_class"], m["auc_per_class"]))
        head = "".join(f"<th>{html.escape(lab)}</th>" for lab in labels)
        matrix = "".join(f"<tr><td>{html.escape(lab)}</td>" + "".join(f"<td>{n}</td>" for n in row) + "</tr>"
                         for lab, row in zip(labels, m["confusion"]))
        out.append(f"<h3>{html.escape(_label(r))}: class by class</h3><p class='muted'>accuracy {m['accuracy']:.3f}, "
                   f"balanced accuracy {m['balanced_accuracy']:.3f}</p><table><tr><th>class</th><th>sensitivity</th>"
                   f"<th>specificity</th><th>AUC (one vs rest)</th></tr>{rates}</table><p class='muted'>Confusion "
                   f"matrix (rows: the truth, columns: the decision)</p><table><tr><th></th>{head}</tr>{matrix}"
                   "</table>")
    return "".join(out)


def _num(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _heatmap_costs(report: dict) -> str:
    rows = [r for r in report["rows"] if r.get("heatmap_ms")]
    if not rows:
        return ""
    cells = "".join(f"<tr><td>{html.escape(_label(r))}</td><td>{r['heatmap_ms']['without_p50']:.3f}</td>"
                    f"<td>{r['heatmap_ms']['with_p50']:.3f}</td><td>{r['heatmap_ms']['added_p50']:.3f}</td></tr>"
                    for r in rows)
    return ("<h3>What a heatmap costs</h3><table><tr><th>row</th><th>prediction p50 ms</th><th>with heatmap</th>"
            f"<th>added</th></tr>{cells}</table>")


def _figure(variant: str, shown: dict) -> str:
    score = ""
    if shown["score"] is not None:  # a binary model: its positive class's score, against its threshold
        score = f"; {html.escape(str(shown.get('positive')))} score {shown['score']:.3f}"
        score += f" (threshold {shown['threshold']:.3f})" if shown.get("threshold") is not None else ""
    return (f"<figure><img alt='{variant} heatmap' src='data:image/png;base64,{shown['png']}'>"
            f"<figcaption>{variant}: {html.escape(shown['label'])}{score}</figcaption></figure>")


def _gallery(report: dict) -> str:
    cases = report.get("gallery") or []
    if not cases:
        return ""
    cells = []
    for c in cases:
        verdict = "fp32 correct" if c["fp32_correct"] else "fp32 wrong"
        pictures = "".join(_figure(v, c[v]) for v in ("fp32", "int8"))
        cells.append(f"<div class='case'><p>image {c['index']}: truth {html.escape(c['truth'])}; {verdict}</p>"
                     f"{pictures}</div>")
    return ("<h3>Heatmaps, fp32 and int8 side by side</h3><p class='muted'>The map of each model's decided class "
            "(a binary model's positive class) over the image; red is where the evidence is strongest. "
            "A clinician sees the int8 map on the cart.</p><div class='gallery'>" + "".join(cells) + "</div>")


def render(result_files: list[str | Path], out: str | Path) -> Path:
    """Write ``out/report.html`` (figures embedded) and the figures as PNG; returns the HTML path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reports = []
    for f in result_files:
        try:
            rep = json.loads(Path(f).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{f}: not a readable report.json ({e})") from None
        if not isinstance(rep, dict) or "rows" not in rep or "device" not in rep:
            raise ValueError(f"{f}: not a medlite report.json (no rows or device)")
        if rep.get("accuracy_only"):
            raise ValueError(f"{f}: an accuracy-only report (bench --accuracy-only) has no latency to draw; its "
                             "report.md has the accuracy")
        rep["_source"] = str(f)
        reports.append(rep)
    fig1 = _png(_figure_auc_latency(reports), out / "auc_vs_latency.png")
    fig2 = _png(_figure_operating_point(reports), out / "operating_points.png")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>medlite report</title><style>{STYLE}</style>"
             "</head><body><h1>medlite report</h1>",
             f"<p class='muted'>{len(reports)} result file(s); rows on the Pareto frontier are shaded.</p>",
             f"<h2>Accuracy against latency</h2><img alt='AUC against p50 latency' src='data:image/png;base64,{fig1}'>",
             f"<h2>Operating points</h2><img alt='sensitivity and specificity' src='data:image/png;base64,{fig2}'>"]
    for rep in reports:
        ds, d = rep["dataset"], rep["device"]
        parts.append(f"<h2>{html.escape(_device_name(rep))}</h2><p class='muted'>{html.escape(d.get('os', ''))}; "
                     f"runtime {html.escape(str(d.get('runtime')))}; data {html.escape(str(ds.get('name')))} "
                     f"{html.escape(str(ds.get('split')))} split, n={ds.get('n')}; "
                     f"from {html.escape(rep['_source'])}</p>")
        parts.append(_table(rep))
        parts.append(_per_class(rep))
        for b, why in rep.get("skipped_backends", {}).items():
            parts.append(f"<p class='muted'>{html.escape(b)} not measured: {html.escape(why)}</p>")
        parts.append(_heatmap_costs(rep))
        parts.append(_gallery(rep))
    parts.append("</body></html>")
    page = out / "report.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    return page
