# Two commands on a fresh machine:  make demo   (whole comparison on the demo dataset)
#                                   make test   (the test suite)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# pyproject extras: cpu,test (DALI CPU pipelines, XGBoost CPU) or, on a CUDA 13 machine, gpu,test. Never both.
EXTRAS ?= cpu,test

.PHONY: install demo test test-fast lint bench gpu-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) cli.py run

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# ruff (rules, then formatting), then the import contract (.importlinter): layers run one way, cli.py on top.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) cli.py demo-data runs/bench/data
	$(PY) cli.py bench loader runs/bench/data --out runs/bench/loader.json
	$(PY) cli.py bench features runs/bench/data --out runs/bench/features.json

# One script, one JSON, one line per check, on a CUDA machine (<= 8 min on an H100/H200). It needs
# PyTorch; every check whose libraries are missing (CuPy, DALI, cuML, XGBoost, ...) is reported as skipped.
GPU_PY ?= python
gpu-check:
	mkdir -p runs/gpu-check
	$(GPU_PY) scripts/gpu_check.py --out runs/gpu-check/gpu_check.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
