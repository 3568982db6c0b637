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


def _figure_auc_latency(reports: list[dict]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, rep in enumerate(reports):
        rows, c = rep["rows"], colours[i % len(colours)]
        sizes = [max(20, r["size_bytes"] / 1024 / 4) for r in rows]
        ax.scatter([r["latency_ms"]["p50"] for r in rows], [r["metrics"]["auc"] for r in rows], s=sizes, color=c,
                   alpha=0.7, edgecolors="black", label=_device_name(rep))
        for r in rows:
            ax.annotate(_label(r), (r["latency_ms"]["p50"], r["metrics"]["auc"]), textcoords="offset points",
                        xytext=(6, 4), fontsize=8)
        front = pareto(rows)
        ax.plot([r["latency_ms"]["p50"] for r in front], [r["metrics"]["auc"] for r in front], "--", color=c,
                linewidth=1.2, label=f"Pareto frontier ({_device_name(rep)})")
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per image, ms (log scale)")
    ax.set_ylabel("test AUC")
    ax.set_title("Accuracy against latency (marker area: model size)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _figure_operating_point(reports: list[dict]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    markers = "os^Dv<>"
    for i, rep in enumerate(reports):
        for r in rep["rows"]:
            m = r["metrics"]
            if m.get("sensitivity") is None:
                continue
            ax.scatter(1 - m["specificity"], m["sensitivity"], marker=markers[i % len(markers)], s=50, alpha=0.8)
            ax.annotate(_label(r), (1 - m["specificity"], m["sensitivity"]), textcoords="offset points",
                        xytext=(5, 3), fontsize=8)
    ax.set_xlabel("1 - specificity (false positive rate) at each variant's threshold")
    ax.set_ylabel("sensitivity at each variant's threshold")
    ax.set_title("Operating points (thresholds chosen on validation)")
    ax.grid(True, alpha=0.3)
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
        for b, why in rep.get("skipped_backends", {}).items():
            parts.append(f"<p class='muted'>{html.escape(b)} not measured: {html.escape(why)}</p>")
        parts.append(_heatmap_costs(rep))
        parts.append(_gallery(rep))
    parts.append("</body></html>")
    page = out / "report.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    return page
