# depth_anything_nb — the README's two commands live here: `make demo` and `make test`.
# Each creates .venv on first use (torch/torchvision pinned to the pair these machines carry;
# settings.ini states ranges so a GPU machine can install its CUDA build instead).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
ORACLE_PIN ?= jkp-depth-anything-v2==0.1.1
DEPS_HASH := $(shell cat setup.py settings.ini Makefile | md5sum | cut -c1-10)
STAMP := $(VENV)/.installed-$(DEPS_HASH)
NB_WORKERS ?= 2
RUN_DIR ?= runs/demo
ENCODER ?= vits
PRESET ?= mini
JOBS ?= 2
TABLES ?= all

.PHONY: venv demo infer-demo tables test test-notebooks test-pytest test-slow export clean-nbs

venv: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e ".[train,app,experiments,dev]"
	# the official model code, used only as the parity oracle in tests (its deps are ours already)
	$(BIN)/pip install -q --no-deps $(ORACLE_PIN)
	rm -f $(VENV)/.installed-* && touch $@

## The main job: the Depth Anything V2 pipeline in miniature (teacher on synthetic scenes -> pseudo-labels on
## unlabeled "real" scenes -> student, evaluated against a synthetic-only student), on data the package renders.
## The executed notebook with the results lands in $(RUN_DIR); the runs (checkpoints, metrics) under runs/.
demo: venv
	mkdir -p $(RUN_DIR)
	$(BIN)/papermill nbs/train_student.ipynb $(RUN_DIR)/train_student.ipynb -p encoder $(ENCODER) -p preset $(PRESET) --cwd nbs
	@echo "results: $(RUN_DIR)/train_student.ipynb (and runs/train_student/*/metrics.json)"

## Depth maps for the sample photos that ship with scikit-image (random weights unless CHECKPOINT is given).
infer-demo: venv
	$(BIN)/depth-anything run --sample-images --encoder $(ENCODER) --outdir $(RUN_DIR)/infer $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))

## The paper tables (nbs/tables) in a preset: make tables PRESET=mini JOBS=2 [TABLES="dav2_table05 prv2_table05"]
tables: venv
	$(BIN)/python -m depth_anything_nb.experiments run $(TABLES) --preset $(PRESET) --jobs $(JOBS)

## The whole test suite: every notebook (nbdev_test), then the pytest suite.
test: venv test-notebooks test-pytest

test-notebooks: venv
	cd nbs && OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 IN_TEST=1 ../$(BIN)/nbdev_test --n_workers $(NB_WORKERS) --timing

test-pytest: venv
	$(BIN)/python -m pytest tests -q -ra --timeout=1200

## Notebook cells flagged `#| slow` (mini-preset experiments), not part of CI.
test-slow: venv
	cd nbs && ../$(BIN)/nbdev_test --flags slow --n_workers 1 --timing

## Developer helpers.
export: venv
	cd nbs && ../$(BIN)/nbdev_export

clean-nbs: venv
	cd nbs && ../$(BIN)/nbdev_clean
