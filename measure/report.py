"""The accuracy-vs-latency report: report.json (a contract, see DESIGN.md), report.md and report.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..edge.version import __version__

SCHEMA = 1
CSV_FIELDS = ("variant", "backend", "threads", "size_bytes", "load_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms",
              "auc", "sensitivity", "specificity", "accuracy", "threshold", "agreement_with_fp32", "model")


def pareto(rows: list[dict]) -> list[dict]:
    """Rows no other row beats on both p50 latency (lower) and AUC (higher), by rising latency."""
    front, best = [], -1.0
    timed = [r for r in rows if r.get("latency_ms")]  # an accuracy-only report has no latency, and no frontier
    for r in sorted(timed, key=lambda r: (r["latency_ms"]["p50"], -r["metrics"]["auc"])):
        if r["metrics"]["auc"] > best:
            front.append(r)
            best = r["metrics"]["auc"]
    return front


def build_report(rows: list[dict], dataset: dict, device: dict, skipped: dict | None = None) -> dict:
    """The report.json object; ``skipped`` maps each backend that was not measured to the reason."""
    return {"schema": SCHEMA, "medlite_version": __version__, "device": device, "dataset": dataset, "rows": rows,
            "skipped_backends": skipped or {}}


def flat_row(row: dict) -> dict:
    m, lat = row["metrics"], row.get("latency_ms") or {}  # none in an accuracy-only report
    return {"variant": row["variant"], "backend": row["backend"], "threads": row["threads"],
            "size_bytes": row["size_bytes"], "load_ms": row.get("load_ms"), "p50_ms": lat.get("p50"),
            "p90_ms": lat.get("p90"), "p99_ms": lat.get("p99"), "mean_ms": lat.get("mean"), "auc": m.get("auc"),
            "sensitivity": m.get("sensitivity"),
            "specificity": m.get("specificity"), "accuracy": m.get("accuracy"), "threshold": m.get("threshold"),
            "agreement_with_fp32": m.get("agreement_with_fp32"), "model": row["model"]}


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def markdown(report: dict) -> str:
    d, ds = report["device"], report["dataset"]
    lines = [
        "# medlite report", "",
        f"Device: {d.get('cpu')} ({d.get('machine')}, {d.get('cores')} cores), {d.get('os')}; runtime "
        f"{d.get('runtime')}. Data: {ds.get('name')} {ds.get('split')} split, n={ds.get('n')}.", "",
        "| variant | backend | threads | size (KiB) | p50 ms | p90 ms | p99 ms | AUC | sensitivity | specificity | "
        "accuracy | threshold | agreement with fp32 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["rows"]:
        f = flat_row(r)
        lines.append(
            f"| {f['variant']} | {f['backend']} | {f['threads'] or 'default'} | {f['size_bytes'] / 1024:.1f} | "
            f"{_fmt(f['p50_ms'], '.4f')} | {_fmt(f['p90_ms'], '.4f')} | {_fmt(f['p99_ms'], '.4f')} | "
            f"{_fmt(f['auc'], '.4f')} | "
            f"{_fmt(f['sensitivity'], '.3f')} | {_fmt(f['specificity'], '.3f')} | {_fmt(f['accuracy'], '.3f')} | "
            f"{_fmt(f['threshold'], '.4f')} | {_fmt(f['agreement_with_fp32'], '.3f')} |")
    for r in report["rows"]:
        lines += per_class_lines(r)
    return "\n".join(lines) + "\n"


def per_class_lines(row: dict) -> list[str]:
    """A multi-class row's decision class by class (Markdown). Nothing for a binary row."""
    m, labels = row["metrics"], row.get("labels")
    if "per_class" not in m or not labels:
        return []
    return ["", f"{row['variant']} on {row['backend']}: accuracy {m['accuracy']:.3f}, balanced accuracy "
            f"{m['balanced_accuracy']:.3f}", ""] + per_class_table(m, labels)


def per_class_table(m: dict, labels: list[str], weights: list[float] | None = None) -> list[str]:
    """Markdown lines of a multi-class split's metrics ``m``: each class's (decision weight,) sensitivity,
    specificity and one-vs-rest AUC, then the confusion matrix."""
    weight = weights is not None
    out = ["| class |" + (" weight |" if weight else "") + " sensitivity | specificity | AUC (one vs rest) |",
           "| --- |" + (" ---: |" if weight else "") + " ---: | ---: | ---: |"]
    for k, (label, r, auc) in enumerate(zip(labels, m["per_class"], m["auc_per_class"])):
        out.append(f"| {label} |" + (f" {weights[k]:.3f} |" if weight else "") +
                   f" {_fmt(r['sensitivity'], '.3f')} | {_fmt(r['specificity'], '.3f')} | {auc:.3f} |")
    out += ["", "Confusion matrix (rows: the truth, columns: the decision):", "",
            "| | " + " | ".join(labels) + " |", "| --- |" + " ---: |" * len(labels)]
    out += [f"| {label} | " + " | ".join(str(n) for n in counts) + " |" for label, counts in zip(labels, m["confusion"])]
    return out


def write_report(report: dict, out: str | Path) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "csv": out / "report.csv"}
    paths["json"].write_text(json.dumps(report, indent=1))
    paths["md"].write_text(markdown(report))
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS)
        w.writeheader()
        for r in report["rows"]:
            w.writerow(flat_row(r))
    return paths


def rich_table(report: dict):
    from rich.table import Table

    t = Table(title=f"medlite: {report['dataset'].get('name')} {report['dataset'].get('split')} "
                    f"(n={report['dataset'].get('n')}) on {report['device'].get('cpu')}")
    for col in ("variant", "backend", "threads", "size KiB", "p50 ms", "p99 ms", "AUC", "sens", "spec",
                "agree fp32", "Pareto"):
        t.add_column(col, justify="left" if col in ("variant", "backend") else "right", no_wrap=True)
    front = {id(r) for r in pareto(report["rows"])}
    for r in sorted(report["rows"], key=lambda r: flat_row(r)["p50_ms"] or 0.0):
        f = flat_row(r)
        t.add_row(f["variant"], f["backend"], str(f["threads"] or "default"), f"{f['size_bytes'] / 1024:.1f}",
                  _fmt(f["p50_ms"], ".4f"), _fmt(f["p99_ms"], ".4f"), _fmt(f["auc"], ".4f"),
                  _fmt(f["sensitivity"], ".3f"),
                  _fmt(f["specificity"], ".3f"), _fmt(f["agreement_with_fp32"], ".3f"),
                  "*" if id(r) in front else "")
    return t
