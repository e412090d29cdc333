# Two commands on a fresh machine: `make demo` (the main job) and `make test` (lint + test suite).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint data clean mutation

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel first: any unpinned torch would otherwise pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

data: $(STAMP)
	$(PY) -m aunet.data prepare

# The demo study on the CPU (minutes), then its analysis report. Re-running resumes.
demo: $(STAMP)
	$(PY) -m aunet.data prepare
	$(PY) sweep.py -m
	$(PY) -m analysis report outputs/sweeps/demo --out outputs/sweeps/demo/report

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

# Mutation score (slow, not in CI): mutmut copies the packages to mutants/ and runs the fast
# tests of each module ([tool.mutmut] in pyproject.toml); only `evaluate` of aunet/train.py.
# PYTHONPATH is cleared so the tests import the mutants, not the originals.
MUTATE := "aunet.splitting.*" "aunet.flops.*" "analysis.fits.*" "aunet.optim.*" "aunet.train.x_evaluate__mutmut_*"
mutation: $(STAMP)
	env -u PYTHONPATH $(VENV)/bin/mutmut run $(MUTATE)
	env -u PYTHONPATH $(VENV)/bin/mutmut results

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache mutants
