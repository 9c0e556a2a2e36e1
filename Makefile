# The two quickstart commands (see README):
#   make run    set up .venv and run the whole pipeline on the embedded default (nsd-sim)
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
CONFIG ?=
SNAKEMAKE_ARGS ?=

.PHONY: setup run test test-all lint bench

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/snakemake --profile workflow/profiles/local --cores $(CORES) $(if $(CONFIG),--configfile $(CONFIG)) $(SNAKEMAKE_ARGS)

test: setup
	$(BIN)/python -m pytest

test-all: setup
	$(BIN)/python -m pytest -m ''

lint: setup
	$(BIN)/snakemake --lint

bench: setup
	$(BIN)/python benchmarks/bench_preprocess.py
