# The commands of the README. `make install` once, then any of the others.
VENV ?= .venv
PY := $(VENV)/bin/python
export MLFLOW_DISABLE_TELEMETRY ?= true

.PHONY: install test test-full bench lint clean

install: $(VENV)/.installed

# Reinstalls only when pyproject.toml changes, so `make install` is cheap to repeat.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

test: install
	$(PY) -m pytest -q

test-full: install
	$(PY) -m pytest -q -m ""

bench: install
	cd benchmarks && ../$(PY) bench_engine.py

lint: install
	$(VENV)/bin/ruff check nnexp tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache outputs multirun reports mlflow.db mlartifacts
	find . -name __pycache__ -prune -exec rm -rf {} +
