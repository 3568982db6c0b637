# Two entry points: `make demo` (the main job) and `make test`. Each creates its
# own virtual environment and installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
EDGE_VENV := .venv-edge
# Tests and CI read the real data beside the checkout, never a download.
SHARED_DATA := $(abspath ../shared/data)
export MEDLITE_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)

.PHONY: demo test venv edge-venv clean

# The full kit: training, conversion, report, tests.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[all]"
	touch $@

# The cart's install: base dependencies only (no TensorFlow), plus pytest.
$(EDGE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(EDGE_VENV)
	$(EDGE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(EDGE_VENV)/bin/python -m pip install --quiet -e ".[dev]"
	touch $@

venv: $(VENV)/.installed
edge-venv: $(EDGE_VENV)/.installed

demo: venv
	$(VENV)/bin/medlite demo $(DEMO_ARGS)

test: venv edge-venv
	MEDLITE_EDGE_PYTHON=$(abspath $(EDGE_VENV))/bin/python $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(EDGE_VENV) medlite-out
