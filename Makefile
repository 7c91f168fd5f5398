# The commands of the README. `make install` once, then any of the others.
VENV ?= .venv
PY := $(VENV)/bin/python
export MLFLOW_DISABLE_TELEMETRY ?= true
# MNIST from ../shared when it is there (this project's machines); otherwise nnexp downloads it once.
export NNEXP_DATA_DIR ?= $(wildcard $(abspath ../shared/data/mnist))

# the book's experiments of chapters 1-5, in the order of its table (experiments/*.yaml but smoke)
EXPERIMENTS := $(filter-out smoke ch6_%,$(basename $(notdir $(wildcard experiments/*.yaml))))
# chapter 6's rows 1-4, its rows that run on this machine (the others train on 250,000 images: days),
# and network3's conventions against nnexp's on row 1's network
CH6 := ch6_fc ch6_conv1 ch6_conv2 ch6_conv2_relu ch6_fc_conventions ch6_fc_dropout_scaling
# a job per core, each on one BLAS thread
PARALLEL := hydra/launcher=joblib hydra.launcher.n_jobs=-1

.PHONY: install test test-full bench bench-harness lint format clean run sweep ui server report reproduce reproduce-ch6

install: $(VENV)/.installed

# Reinstalls only when pyproject.toml changes, so `make install` is cheap to repeat.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

run: install
	$(PY) -m nnexp.run $(ARGS)

sweep: install
	$(PY) -m nnexp.run -m $(PARALLEL) cost=quadratic,crossentropy $(ARGS)

ui: install
	$(PY) -m nnexp.server ui

# The team's MLflow tracking server on 127.0.0.1:5000 (ARGS: --backend-store-uri, --port, --auth, ...)
server: install
	$(PY) -m nnexp.server $(ARGS)

report: install
	$(PY) -m nnexp.report $(ARGS)

# Every book experiment as a sweep (seeds and settings side by side, a job per core), the chapter-3
# search (one trial at a time: reproducible), then RESULTS.md.
reproduce: install
	for e in $(EXPERIMENTS); do $(PY) -m nnexp.run -m $(PARALLEL) experiment=$$e || exit 1; done
	$(PY) -m nnexp.run -m search=ch3_eta_lmbda
	$(PY) -m nnexp.book

# Chapter 6's rows 1-4 as sweeps of 3 seeds and the conventions' sweeps, then RESULTS.md again (after
# `make reproduce`, whose runs it reads too): about 100 minutes on 2 cores here (rows 5-8: README,
# "Chapter 6").
reproduce-ch6: install
	for e in $(CH6); do $(PY) -m nnexp.run -m $(PARALLEL) experiment=$$e || exit 1; done
	$(PY) -m nnexp.book

# Both cores (pytest-xdist), and the 15 slowest tests named at the end of every run.
TEST := $(PY) -m pytest -q -n 2 --dist loadgroup --durations=15

test: install
	$(TEST)

test-full: install
	$(TEST) -m ""

bench: install
	cd benchmarks && ../$(PY) bench_engine.py

bench-harness: install
	$(PY) benchmarks/bench_harness.py $(ARGS)

lint: install
	$(VENV)/bin/ruff check nnexp hydra_plugins tests benchmarks
	$(VENV)/bin/ruff format --check nnexp hydra_plugins tests benchmarks

format: install
	$(VENV)/bin/ruff format nnexp hydra_plugins tests benchmarks
	$(VENV)/bin/ruff check --fix nnexp hydra_plugins tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache outputs multirun reports mlflow.db mlflow.db.lock mlartifacts optuna.journal
	find . -name __pycache__ -prune -exec rm -rf {} +
