"""The house: layers held by import-linter, imports a static grapher can follow, size limits, no second copies."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("edge", "measure", "cluster", "train", "convert", "medlite")


def test_a_static_import_grapher_sees_the_arrows_inside_edge_and_from_convert():
    """grimp (import-linter's grapher) reads source only; it sees medlite as the strict editable install lays it out."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("medlite")
    inside = graph.find_modules_directly_imported_by("medlite.edge.runtime")
    assert {"medlite.edge.contract", "medlite.edge.decision", "medlite.edge.backends"} <= inside
    assert "medlite.edge.contract" in graph.find_modules_directly_imported_by("medlite.convert.pipeline")
    assert "medlite.edge.runtime" in graph.find_modules_directly_imported_by("medlite.measure.bench")
    assert not graph.find_modules_that_directly_import("medlite.measure") & graph.find_descendants("medlite.edge")


def test_relative_imports_inside_the_stages_name_their_files():
    """Every relative import in a stage resolves, by the folders alone, to a file of the checkout."""
    checked = 0
    for stage in STAGES[:5]:
        for path in (ROOT / stage).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level:
                    base = path.parent
                    for _ in range(node.level - 1):
                        base = base.parent
                    target = base.joinpath(*(node.module or "").split(".")) if node.module else base
                    names = [target.with_suffix(".py"), target / "__init__.py"]
                    names += [target / f"{a.name}.py" for a in node.names] + [target / a.name for a in node.names]
                    assert any(n.exists() for n in names), f"{path}: from {'.' * node.level}{node.module}"
                    checked += 1
    assert checked > 50


def test_no_module_over_400_lines_and_no_function_over_80():
    too_long = []
    for stage in STAGES:
        for path in (ROOT / stage).rglob("*.py"):
            text = path.read_text()
            if text.count("\n") > 400:
                too_long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > 80:
                        too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not too_long


@pytest.mark.parametrize("stage", ["edge", "measure", "cluster", "train", "convert"])
def test_a_stage_imported_by_its_folder_name_is_refused(stage):
    """With the checkout's root on sys.path, `import edge` would be a second copy with its own error classes."""
    r = subprocess.run([sys.executable, "-c", f"import {stage}"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and f"import medlite.{stage}, not {stage}" in r.stderr


def test_the_checkout_is_laid_out_as_the_package_is():
    """Started in the checkout's root, Python (and import-linter, which puts the root first on sys.path) finds
    the stages through medlite/'s links: the same files, one copy."""
    code = "import medlite.edge, medlite.convert.pipeline as p; print(medlite.edge.__file__, p.__file__)"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr
    edge, pipeline = (Path(f).resolve() for f in r.stdout.split())
    assert edge == ROOT / "edge" / "__init__.py" and pipeline == ROOT / "convert" / "pipeline.py"
    r = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "Contracts: 4 kept, 0 broken." in r.stdout
