# Two entry points: `make demo` (the main job) and `make test`. Each creates its
# own virtual environment and installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
EDGE_VENV := .venv-edge
# Tests and CI read the real data beside the checkout, never a download.
SHARED_DATA := $(abspath ../shared/data)
export MEDLITE_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)
# medlite installs in setuptools' strict editable mode: a link tree under build/ lays the stages out as
# medlite/edge, medlite/train, ... so that import graphs and editors follow every import to its file.
# The tree lists the files that existed when it was made, so it is refreshed before every run.
STRICT := --config-settings editable_mode=strict
# setuptools explains strict mode at length on every install: kept in a log, shown when the install fails.
RELINK = mkdir -p build && $(1)/bin/python -m pip install --quiet --no-deps -e . $(STRICT) >build/link.log 2>&1 \
	|| (cat build/link.log; exit 1)

.PHONY: demo test fuzz venv edge-venv link lint-imports arm64-lint arm64-resolve arm64-check clean

# The full kit: training, conversion, report, tests.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[all]" $(STRICT)
	touch $@

# The cart's install: base dependencies only (no TensorFlow), plus pytest.
$(EDGE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(EDGE_VENV)
	$(EDGE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(EDGE_VENV)/bin/python -m pip install --quiet -e ".[dev]" $(STRICT)
	touch $@

venv: $(VENV)/.installed
edge-venv: $(EDGE_VENV)/.installed

# Re-link medlite's files (new modules included) into both environments; dependencies are not touched.
link: venv edge-venv
	@$(call RELINK,$(VENV))
	@$(call RELINK,$(EDGE_VENV))

demo: venv
	@$(call RELINK,$(VENV))
	$(VENV)/bin/medlite demo $(DEMO_ARGS)

# The layers of DESIGN.md, on the import graph of the checkout (medlite/ links to the stages beside it).
lint-imports: link
	@($(VENV)/bin/lint-imports >build/lint-imports.log 2>&1 \
	  && grep -E " KEPT|^Contracts:" build/lint-imports.log) || (cat build/lint-imports.log; exit 1)

# pytest's own script, not `python -m pytest`: that would put the checkout's root first on sys.path.
test: link lint-imports arm64-lint arm64-resolve
	MEDLITE_EDGE_PYTHON=$(abspath $(EDGE_VENV))/bin/python $(VENV)/bin/pytest $(PYTEST_ARGS)

# 100,000 mutated real files and models through what `medlite predict` runs (scripts/fuzz.py), on a model the
# chain trains here in about a minute; `make test` runs a short smoke of the same harness.
FUZZ_MODEL := build/fuzz-model/models/int8.tflite
$(FUZZ_MODEL): | venv
	$(VENV)/bin/medlite demo -q --epochs 1 --variants int8 --out build/fuzz-model >/dev/null

fuzz: link $(FUZZ_MODEL)
	$(VENV)/bin/python scripts/fuzz.py --model $(FUZZ_MODEL) --data-dir "$(MEDLITE_DATA_DIR)" --inputs 100000

# The arm64 cart image, checked without a Docker engine: lint, and a linux/arm64 wheel for every package.
arm64-lint: venv
	$(VENV)/bin/hadolint Dockerfile.arm

arm64-resolve: venv
	$(VENV)/bin/python scripts/arm64/resolve_wheels.py

# medlite predict under arm64 emulation (qemu-user), compared with x86-64; needs root for apt and debootstrap.
arm64-check: venv
	$(VENV)/bin/python scripts/arm64/emulated_check.py

clean:
	rm -rf $(VENV) $(EDGE_VENV) medlite-out build
