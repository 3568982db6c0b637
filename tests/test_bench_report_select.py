"""`medlite bench`, `medlite report` and `medlite select`."""

import base64
import json
import re
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest

from medlite.cli import main
from medlite.measure.report import pareto
from medlite.measure.select import select


def row(variant, p50, auc, sens=0.96, p99=None, size=1000, backend="cpu", threads=None, model=None):
    return {"variant": variant, "backend": backend, "threads": threads, "model": model or f"{variant}.tflite",
            "size_bytes": size, "load_ms": 1.0,
            "latency_ms": {"p50": p50, "p90": p50, "p99": p99 or p50 * 1.2, "mean": p50, "std": 0.0},
            "metrics": {"auc": auc, "sensitivity": sens, "specificity": 0.8, "accuracy": 0.9, "threshold": 0.4,
                        "agreement_with_fp32": 1.0}}


def report(*rows):
    return {"schema": 1, "device": {"cpu": "test", "machine": "x86_64", "cores": 2}, "dataset": {"name": "d"},
            "rows": list(rows)}


def test_select_clear_winner():
    r = report(row("fp32", 0.50, 0.970), row("int8", 0.15, 0.968), row("dynamic", 0.30, 0.970),
               row("fp16", 0.45, 0.970))
    sel = select(r, max_auc_drop=0.005, min_sensitivity=0.95)
    assert sel.chosen.row["variant"] == "int8" and not sel.ties
    assert sel.explanation.startswith("int8 on cpu: p50 0.1500 ms, the fastest of 4 qualifying")


def test_select_tie_is_broken_by_p99_then_size():
    r = report(row("fp32", 0.50, 0.970), row("int8", 0.15, 0.968, p99=0.30), row("int8-qat", 0.15, 0.969, p99=0.20))
    sel = select(r, 0.005, 0.95)
    assert sel.chosen.row["variant"] == "int8-qat"
    assert [c.row["variant"] for c in sel.ties] == ["int8"] and "tied on p50 with int8 on cpu" in sel.explanation
    r = report(row("fp32", 0.50, 0.970), row("int8", 0.15, 0.968, p99=0.2, size=900),
               row("int8-pruned", 0.15, 0.968, p99=0.2, size=500))
    assert select(r, 0.005, 0.95).chosen.row["variant"] == "int8-pruned"


def test_select_nothing_qualifies_names_each_failed_constraint(tmp_path, capsys):
    r = report(row("fp32", 0.50, 0.970, sens=0.93), row("int8", 0.15, 0.950), row("dynamic", 0.30, 0.969, sens=0.90))
    sel = select(r, 0.005, 0.95)
    assert sel.chosen is None
    fails = {c.row["variant"]: c.failures for c in sel.candidates}
    assert fails["fp32"] == ("sensitivity 0.930 is below the floor 0.95",)
    assert fails["int8"][0] == "AUC 0.9500 is 0.0200 below fp32's 0.9700 (budget 0.005)"
    assert fails["dynamic"] == ("sensitivity 0.900 is below the floor 0.95",)
    f = tmp_path / "report.json"
    f.write_text(json.dumps(r))
    assert main(["select", str(f)]) == 1
    out = capsys.readouterr().out
    assert "nothing qualifies" in out and "int8 on cpu: AUC 0.9500 is 0.0200 below" in out


def test_select_copies_the_chosen_model(tmp_path, capsys):
    (tmp_path / "int8.tflite").write_bytes(b"model bytes")
    f = tmp_path / "report.json"
    f.write_text(json.dumps(report(row("fp32", 0.5, 0.97), row("int8", 0.1, 0.97))))
    assert main(["select", str(f), "--copy-to", str(tmp_path / "ship.tflite")]) == 0
    assert (tmp_path / "ship.tflite").read_bytes() == b"model bytes"
    assert main(["select", str(tmp_path / "nope.json")]) == 2


def test_pareto_frontier():
    rows = [row("a", 1.0, 0.90), row("b", 2.0, 0.95), row("c", 3.0, 0.93), row("d", 0.5, 0.85), row("e", 2.5, 0.96)]
    assert [r["variant"] for r in pareto(rows)] == ["d", "a", "b", "e"]


@pytest.fixture(scope="module")
def bench_report(demo, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert main(["bench", str(demo / "models"), "--data", "pneumoniamnist", "--data-dir", str(data_dir),
                 "--out", str(out), "--threads", "1", "--threads", "2"]) == 0
    return out


def test_bench_rows_are_measured(bench_report, demo):
    rep = json.loads((bench_report / "report.json").read_text())
    assert rep["schema"] == 1 and rep["dataset"]["n"] == 624
    from medlite.edge import Options
    from medlite.edge.backends import gpu

    gpu_ok, why = gpu.is_available(Options(path=str(demo / "models" / "int8.tflite")))
    backends = {"cpu", "gpu"} if gpu_ok else {"cpu"}
    assert gpu_ok or rep["skipped_backends"]["gpu"] == why  # the reason is recorded, never a fake row
    rows = rep["rows"]
    assert {(r["variant"], r["backend"], r["threads"]) for r in rows} == {
        (v, b, t) for v in ("fp32", "int8") for b in backends for t in (1, 2)}
    for r in rows:
        lat = r["latency_ms"]
        assert lat["runs"] == 200 and lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] and lat["std"] >= 0
        # The child that measured it holds LiteRT and the split, never TensorFlow (over 1 GB in this parent).
        assert 10 < r["peak_rss_mb"] < 500 and r["load_ms"] > 0 and r["first_inference_ms"] > 0
        assert r["throughput_per_s"] > 0
        m = r["metrics"]
        assert m["auc_ci95"][0] < m["auc"] < m["auc_ci95"][1]
        assert m["balanced_accuracy"] == pytest.approx((m["sensitivity"] + m["specificity"]) / 2)
        assert 0.9 <= m["agreement_with_fp32"] <= 1.0
    assert (bench_report / "report.csv").read_text().count("\n") == 1 + len(rows)


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.tables, self.errors = [], 0, []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        if tag == "table":
            self.tables += 1


def test_report_html_is_self_contained_and_merges_devices(bench_report, demo, tmp_path):
    other = json.loads((demo / "report.json").read_text())
    other["device"]["cpu"] = "second cart"
    (tmp_path / "cart.json").write_text(json.dumps(other))
    assert main(["report", str(bench_report / "report.json"), str(tmp_path / "cart.json"),
                 "--out", str(tmp_path / "html")]) == 0
    page = (tmp_path / "html" / "report.html").read_text()
    assert "http://" not in page and "https://" not in page  # nothing to fetch when opened
    p = _Collector()
    p.feed(page)
    reports = [json.loads((bench_report / "report.json").read_text()), other]
    heatmap_tables = sum(any(r.get("heatmap_ms") for r in rep["rows"]) for rep in reports)
    gallery_images = sum(2 * len(rep.get("gallery") or []) for rep in reports)
    assert p.tables == 2 + heatmap_tables and len(p.imgs) == 2 + gallery_images and "second cart" in page
    assert heatmap_tables and gallery_images
    for src in p.imgs:
        png = base64.b64decode(re.sub("^data:image/png;base64,", "", src))
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        # A drawn figure, or a gallery overlay (a 28 px X-ray enlarged to 160 px), not a blank.
        assert img is not None and img.shape[0] >= 160 and img.std() > 5
    assert (tmp_path / "html" / "auc_vs_latency.png").exists()
    assert main(["report", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x")]) == 2


def test_figures_label_every_row_without_overlap_and_plot_the_auc_interval(bench_report):
    """Rows whose points coincide (fp32 and fp16 often do) share one numbered label instead of two names drawn
    over each other; no two labels overlap; the AUC axis spans each row's 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    from medlite.measure.report_html import _figure_auc_latency, _figure_operating_point

    rep = json.loads((bench_report / "report.json").read_text())
    for make in (_figure_auc_latency, _figure_operating_point):
        fig = make([rep, rep])  # the same rows twice: every point coincides with another
        ax = fig.axes[0]
        fig.canvas.draw()
        labels = [t for t in ax.texts if t.get_text()]  # (a moved label's line is an annotation without text)
        boxes = [t.get_window_extent() for t in labels]
        assert boxes and all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
        numbers = sorted(int(n) for t in labels for n in t.get_text().split(", "))
        assert numbers == list(range(1, len(numbers) + 1))  # every row numbered once
        assert len(ax.get_legend().get_texts()) == len(numbers)
    lo, hi = _figure_auc_latency([rep]).axes[0].get_ylim()
    assert all(lo <= r["metrics"]["auc_ci95"][0] and r["metrics"]["auc_ci95"][1] <= hi for r in rep["rows"])


def test_report_html_loads_every_figure_in_headless_chromium(bench_report, tmp_path):
    """The page as a person opens it: Chromium (Debian's, installed by .ci/run) loads report.html from disk
    and every image in it decodes (naturalWidth > 0), with nothing fetched from the network."""
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium; .ci/run does)")
    assert main(["report", str(bench_report / "report.json"), "--out", str(tmp_path / "html")]) == 0
    page = (tmp_path / "html" / "report.html").read_text()
    probe = ("<script>addEventListener('load', () => document.body.setAttribute('data-images', "
             "[...document.images].map(i => i.complete && i.naturalWidth > 0 ? 'y' : 'n').join('')))</script>")
    (tmp_path / "probe.html").write_text(page.replace("</body>", probe + "</body>"))
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
                          (tmp_path / "probe.html").as_uri()], capture_output=True, text=True, timeout=120)
    loaded = re.search(r'data-images="([yn]*)"', out.stdout)
    assert loaded, out.stderr[-2000:]
    p = _Collector()
    p.feed(page)
    assert loaded.group(1) == "y" * len(p.imgs) and len(p.imgs) >= 2


def test_labels_of_near_points_are_moved_apart_not_drawn_over_each_other():
    """Two rows at one operating point share the label "1, 2"; a third a few pixels to its right would have
    its label drawn over it: it is moved up, with a line to its point. (Near labels once hung the placement.)"""
    import matplotlib

    matplotlib.use("Agg")
    from medlite.measure.report_html import _figure_operating_point

    rows = [row("fp32", 0.5, 0.957), row("fp16", 0.5, 0.957), row("int8", 0.16, 0.957)]
    for r, spec in zip(rows, (0.8, 0.8, 0.79)):
        r["metrics"]["specificity"] = spec
    fig = _figure_operating_point([report(*rows)])
    fig.canvas.draw()
    texts = fig.axes[0].texts
    labels = [t for t in texts if t.get_text()]
    boxes = [t.get_window_extent() for t in labels]
    assert sorted(t.get_text() for t in labels) == ["1, 2", "3"]
    assert all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert len(texts) == 3  # the moved label's line
