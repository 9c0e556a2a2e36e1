# The two quickstart commands (see README):
#   make run    set up .venv and run the whole pipeline on the embedded default (nsd-sim)
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
CONFIG ?=
SNAKEMAKE_ARGS ?=

.PHONY: setup run test test-all lint bench bench-brain bench-decode bench-ceilings bench-ridge sim-weights sim-weights-gpu

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
	$(BIN)/ruff check --select F braindecode_pkg tests benchmarks
	$(BIN)/snakemake --lint

bench: setup
	$(BIN)/python benchmarks/bench_preprocess.py

# issue 4's targets on the nsd-sim default, with the data curve and the noise-free ceiling (4.3 min on 2 cores on 2026-11-30; 46 min on an earlier, busier machine)
bench-brain: setup
	$(BIN)/python benchmarks/bench_brain.py --pretrain-curve 1,2,4

# issue 18: MindEye2's decode recipe on the nsd-sim default, ablated (direction / + prior / + img2img /
# + best-of-n), its choices made on the validation split, its targets over 3 seeds. WORLD: a make run
# results folder to reuse (its sim/, prep/ and embed/clip.h5); by default the world is made here.
WORLD ?=
bench-decode: setup
	$(BIN)/python benchmarks/bench_decode.py --work results/bench_decode $(if $(WORLD),--world $(WORLD))

# issue 3's ceilings of the shipped nsd-sim models (CLIP retrieval, images and captions from true embeddings)
bench-ceilings: setup
	$(BIN)/python benchmarks/bench_ceilings_clip.py
	$(BIN)/python benchmarks/bench_ceilings_images.py
	$(BIN)/python benchmarks/bench_ceilings_captions.py

# issue 19: today's leave-one-image-out ridge_cv against himalaya (pip extra `bench`) on synthetic data
# at RIDGE_SCALE of the real shapes (1.0: 30,000 x 15,724 -> 1024). The default 0.25 takes about an
# hour on 2 busy cores; 1.0 needs about 22 GB for today's code alone (more than a shared 24 GB machine has free).
RIDGE_SCALE ?= 0.25
bench-ridge: setup
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[bench]'
	$(BIN)/python benchmarks/bench_ridge.py --scale $(RIDGE_SCALE)

# Retrain the nsd-sim models shipped in braindecode_pkg/sim/weights/nsd-sim-1.0 with their recorded
# chain of recipes and seed 0 (braindecode-pkg train-sim-models; README there: ~6 h on 2 cores),
# into SIM_OUT (its stages/ holds the intermediate ones; a rerun resumes after the last finished
# stage). Its stages.json records every run as the shipped one does: compare the two, or copy its
# three model folders over the shipped ones.
SIM_OUT ?= results/models/nsd-sim-retrained
sim-weights: setup
	$(BIN)/python -m braindecode_pkg train-sim-models --out $(SIM_OUT)

# The same three models on one CUDA GPU with the `gpu` presets (larger batches and data; the CLIP
# with shape-twin hard negatives, issue 3), each fitted to a time budget, into SIM_GPU_OUT. Written
# for a GPU and tested on CPU only: not yet run on a GPU.
SIM_GPU_OUT ?= results/models/nsd-sim-gpu
sim-weights-gpu: setup
	$(BIN)/python -m braindecode_pkg train-clip --preset gpu --device cuda --workers 8 --minutes 5 --out $(SIM_GPU_OUT)/clip
	$(BIN)/python -m braindecode_pkg train-image-decoder --preset gpu --device cuda --workers 4 --minutes 4 --sim-clip $(SIM_GPU_OUT)/clip --out $(SIM_GPU_OUT)/image_decoder & pid=$$!; \
	$(BIN)/python -m braindecode_pkg train-captioner --preset gpu --device cuda --workers 4 --minutes 4 --sim-clip $(SIM_GPU_OUT)/clip --out $(SIM_GPU_OUT)/captioner; \
	rc=$$?; wait $$pid && test $$rc -eq 0
