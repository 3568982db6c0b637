"""A short run of the fuzz harness (`make fuzz` runs 100,000 inputs): no crash, no patient data out."""

import importlib
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def test_fuzz_smoke(int8_model, data_dir, monkeypatch):
    # Imported by name from its folder, so that its worker processes (spawned) can import it too.
    monkeypatch.syspath_prepend(str(SCRIPTS))
    fuzz = importlib.import_module("fuzz")
    counts, reduced, leaks, crashes, _ = fuzz.run(600, str(int8_model), str(data_dir), shards=1)
    assert sum(counts.values()) == 600 and not crashes and not leaks
    assert reduced > 0  # the chest CR's JPEG 2000 was decoded at a reduced resolution level, as predict does
    # every kind of outcome was reached: the mutations exercise the readers, the rules and the model checks
    assert {"ok", "rejected", "error", "refused"} <= set(counts)
    assert not [k for k in counts if k.startswith("unexpected")], counts
