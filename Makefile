# Two commands on a fresh machine: `make demo` (the main job) and `make test` (lint + test suite).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo reference isoflop splitting test lint data clean mutation mutation-recipe

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

# Trials side by side, one per core, each on one thread (through submitit's local launcher): tiny
# models use one thread as well as two, so this doubles a 2-core machine's throughput (measured).
CORES  ?= $(shell nproc)
SIDE_BY_SIDE := hydra/launcher=submitit_local hydra.launcher.timeout_min=240 sweep.batch_size=$(CORES) threads=1

# The demo study on the CPU (about half an hour on 2 cores), then its analysis report (in the study's folder,
# outputs/sweeps/demo/report). Re-running resumes.
demo: $(STAMP)
	$(PY) -m aunet.data prepare
	$(PY) sweep.py -m $(SIDE_BY_SIDE)
	$(PY) -m analysis report outputs/sweeps/demo

# A study kept under results/: $(1) names conf/sweep/$(1).yaml; its table lands in results/$(1)/.
# Re-running resumes (the ledger skips finished trials).
define run_study
	$(PY) -m aunet.data prepare
	$(PY) sweep.py -m sweep=$(1) $(SIDE_BY_SIDE)
	mkdir -p results/$(1)
	cp outputs/sweeps/$(1)/results.csv results/$(1)/results.csv
endef

# The reference study (conf/sweep/reference.yaml).
reference: $(STAMP)
	$(call run_study,reference)
	$(PY) -m analysis report results/reference/results.csv
	$(PY) -m analysis fit results/reference/results.csv
	$(PY) -m analysis validate results/reference/results.csv --holdout 7.2e11 | tee results/reference/validate.txt

# The CPU isoFLOP study (conf/sweep/isoflop_cpu.yaml): model size swept at fixed compute for the
# allocation fits.
isoflop: $(STAMP)
	$(call run_study,isoflop_cpu)
	$(PY) -m analysis optimal results/isoflop_cpu/results.csv
	$(PY) -m analysis report results/isoflop_cpu/results.csv

# The splitting-rule study (conf/sweep/splitting_cpu.yaml): AU-Net 2 with each stage-2 rule against
# the BPE and the byte Transformer, at equal compute.
splitting: $(STAMP)
	$(call run_study,splitting_cpu)
	$(PY) -m analysis report results/splitting_cpu/results.csv

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

# Mutation score (slow, not in CI): mutmut copies the packages to mutants/ and runs the fast
# tests of each module ([tool.mutmut] in pyproject.toml); of aunet/train.py only `evaluate`, of
# aunet/train_config.py the law guard (TrainConfig.sets_from_law, check_law). PYTHONPATH is
# cleared so the tests import the mutants, not the originals.
# `make mutation-recipe` runs the second set alone: what hands a user a recipe or a refusal.
MUTATE := "aunet.splitting.*" "aunet.flops.*" "aunet.archs.*" "analysis.bootstrap.*" "analysis.hyper_laws.*" \
	"analysis.box.*" "analysis.loss_curve.*" "analysis.isoflop.*" "analysis.seeds.*" "analysis.metrics.*" "aunet.optim.*" "aunet.train.x_evaluate__mutmut_*" "aunet.data.packing.x_bits_per_byte__mutmut_*"
MUTATE_RECIPE := "aunet.verdict.*" "aunet.laws.*" "analysis.cards.*" "analysis.extrapolate.*" "analysis.load.*" \
	"sweeps.plan.*" "sweeps.cell.*" "aunet.memory.*" "aunet.train_config.xǁTrainConfigǁsets_from_law__mutmut_*" \
	"aunet.train_config.xǁTrainConfigǁcheck_law__mutmut_*"
mutation: $(STAMP)
	env -u PYTHONPATH $(VENV)/bin/mutmut run $(MUTATE) $(MUTATE_RECIPE)
	env -u PYTHONPATH $(VENV)/bin/mutmut results

mutation-recipe: $(STAMP)
	env -u PYTHONPATH $(VENV)/bin/mutmut run $(MUTATE_RECIPE)
	env -u PYTHONPATH $(VENV)/bin/mutmut results

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache mutants
