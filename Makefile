# Two commands on a fresh machine:  make demo   (whole comparison on the demo dataset)
#                                   make test   (the test suite)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench gpu-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) cli.py run

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# ruff, then the import contract (.importlinter): layers run one way, cli.py on top.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) cli.py demo-data runs/bench/data
	$(PY) cli.py bench loader runs/bench/data --out runs/bench/loader.json
	$(PY) cli.py bench features runs/bench/data --out runs/bench/features.json

# On a CUDA machine with PyTorch (and CuPy for the kernel test); no venv, no DALI or cuML needed.
GPU_PY ?= python
gpu-check:
	mkdir -p runs/gpu-check
	$(GPU_PY) scripts/gpu_check_deep.py --out runs/gpu-check/r3d18_amp.json
	$(GPU_PY) -m pytest -q -m gpu -rs tests/test_features.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
