"""The vertical slice: real PneumoniaMNIST through training, fp32 and int8 conversion, and measurement."""

import json

from medlite.measure.report import SCHEMA


def test_demo_writes_report_with_fp32_and_int8_rows(demo):
    report = json.loads((demo / "report.json").read_text())
    assert report["schema"] == SCHEMA
    assert report["dataset"]["name"] == "pneumoniamnist"
    assert report["dataset"]["split"] == "test" and report["dataset"]["n"] == 624
    assert len(report["dataset"]["sha256"]) == 64
    assert report["device"]["cores"] >= 1 and report["device"]["runtime"].startswith("ai_edge_litert")
    rows = {r["variant"]: r for r in report["rows"]}
    assert set(rows) == {"fp32", "int8"}
    for r in rows.values():
        assert r["backend"] in ("cpu", "gpu") and r["threads"] >= 1
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and lat["mean"] > 0
        assert r["load_ms"] > 0 and r["size_bytes"] > 0
        m = r["metrics"]
        # Three epochs on real data already separate the classes well; the full recipe reaches ~0.97.
        assert m["auc"] > 0.85
        for key in ("sensitivity", "specificity", "accuracy", "threshold"):
            assert 0 <= m[key] <= 1
    assert rows["fp32"]["metrics"]["agreement_with_fp32"] == 1.0
    assert rows["int8"]["metrics"]["agreement_with_fp32"] >= 0.95
    # The graph and weights: int8 stores a quarter of fp32's bytes. The contract (the out-of-distribution
    # detector, the heatmap head's float weights) is the same size in both and is left out.
    assert _weights_bytes(rows["int8"]["model"]) <= 0.3 * _weights_bytes(rows["fp32"]["model"])
    md = (demo / "report.md").read_text()
    assert "| int8 | cpu |" in md and "| fp32 | cpu |" in md


def test_demo_bundle_and_manifest(demo):
    metrics = json.loads((demo / "bundle" / "metrics.json").read_text())
    for split in ("validation", "test"):
        for key in ("auc", "sensitivity", "specificity", "accuracy", "threshold"):
            assert key in metrics[split]
    manifest = json.loads((demo / "models" / "manifest.json").read_text())
    assert [e["variant"] for e in manifest["variants"]] == ["fp32", "int8"]
    for e in manifest["variants"]:
        for key in ("variant", "file", "size_bytes", "sha256", "convert_seconds", "flags", "metrics"):
            assert key in e
        for key in ("auc", "agreement_with_fp32", "threshold"):
            assert key in e["metrics"]


def test_demo_csv_html_and_selection(demo, capsys):
    """The demo's other outputs: the CSV holds the JSON's rows, the HTML page its figures, and selection works
    on what the demo measured."""
    import csv
    import re

    from medlite.cli import main

    report = json.loads((demo / "report.json").read_text())
    with open(demo / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["variant"], r["backend"]) for r in rows] == [(r["variant"], r["backend"]) for r in report["rows"]]
    for r, j in zip(rows, report["rows"]):
        assert float(r["auc"]) == j["metrics"]["auc"] and float(r["p50_ms"]) == j["latency_ms"]["p50"]
    page = (demo / "report.html").read_text()
    figures = re.findall(r"<img alt='(AUC against|sensitivity and)[^>]+src='data:image/png;base64,", page)
    assert len(figures) == 2 and "<table>" in page
    # The gallery: 3 cases fp32 gets right and 3 it gets wrong, each with the fp32 and the int8 overlay.
    assert page.count("<img alt='fp32 heatmap'") == page.count("<img alt='int8 heatmap'") == 6
    assert page.count("fp32 correct</p>") == page.count("fp32 wrong</p>") == 3
    rc = main(["select", str(demo / "report.json"), "--max-auc-drop", "0.05", "--min-sensitivity", "-1"])
    out = capsys.readouterr().out
    assert rc == 0 and re.match(r"(fp32|int8) on (cpu|gpu), 1 thread: p50 [0-9.]+ ms, the fastest of 2", out), out


def _weights_bytes(path: str) -> int:
    from medlite.edge.tflite_file import metadata_spans

    blob = open(path, "rb").read()
    return len(blob) - sum(end - start for start, end in metadata_spans(blob).values())
