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

# Deletes the console scripts of the distribution named in argv[1] from this venv's bin folder.
define REMOVE_SCRIPTS
import os, sys
from importlib.metadata import distribution
bindir = os.path.dirname(sys.executable)
for e in distribution(sys.argv[1]).entry_points:
    path = os.path.join(bindir, e.name)
    if e.group == "console_scripts" and os.path.exists(path):
        os.remove(path)
        print("removed the oracle script", path)
endef
export REMOVE_SCRIPTS

.PHONY: venv demo infer-demo lab browser tables test test-notebooks test-pytest test-slow export clean-nbs

venv: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e ".[train,app,experiments,onnx,dev]"
	# the official model code, used only as the parity oracle in tests (its deps are ours already); its console
	# scripts (depth_anything_run, ...) import top-level modules the wheel lacks, so they are removed: nothing
	# broken lands on the venv's PATH (tests/test_environment.py checks)
	$(BIN)/pip install -q --no-deps $(ORACLE_PIN)
	$(BIN)/python -c "$$REMOVE_SCRIPTS" $(firstword $(subst ==, ,$(ORACLE_PIN)))
	rm -f $(VENV)/.installed-* && touch $@

## The main job: the Depth Anything V2 pipeline in miniature (teacher on synthetic scenes -> pseudo-labels on
## unlabeled "real" scenes -> student, evaluated against a synthetic-only student), on data the package renders.
## The executed notebook with the results lands in $(RUN_DIR); the runs (checkpoints, metrics) under runs/.
demo: venv
	mkdir -p $(RUN_DIR)
	$(BIN)/papermill nbs/train_student.ipynb $(RUN_DIR)/train_student.ipynb -p encoder $(ENCODER) -p preset $(PRESET) --cwd nbs
	@echo "results: $(RUN_DIR)/train_student.ipynb (and runs/train_student/*/metrics.json)"

## Depth maps for the sample photos that ship with scikit-image (the ENCODER release by name, from the Hugging Face
## cache, unless CHECKPOINT is given; RANDOM=1 for random weights), ending with AbsRel/delta1 on the real Middlebury
## Motorcycle pair against its stereo ground truth.
infer-demo: venv
	$(BIN)/depth-anything run --sample-images --encoder $(ENCODER) --outdir $(RUN_DIR)/infer $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT),$(if $(RANDOM),--random-weights))

## JupyterLab from the project's venv (it has the widget extension, so the explorer renders on the first Run All),
## with the venv registered as the Jupyter kernel "depth_anything_nb"; opens nbs/explore.ipynb.
LAB_ARGS ?=
lab: venv
	$(BIN)/python -m ipykernel install --user --name depth_anything_nb --display-name "depth_anything_nb (.venv)" >/dev/null
	$(BIN)/jupyter lab nbs/explore.ipynb $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

## A headless browser for the JupyterLab test (tests/test_lab.py): Debian's chromium when we are root with apt-get;
## otherwise nothing, and that test skips with the reason.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "could not install chromium: tests/test_lab.py will skip"; \
	else echo "no chromium and no root apt-get: tests/test_lab.py will skip"; fi

## The paper tables (nbs/tables) in a preset: make tables PRESET=mini JOBS=2 [TABLES="dav2_table05 prv2_table05"]
tables: venv
	$(BIN)/python -m depth_anything_nb.experiments run $(TABLES) --preset $(PRESET) --jobs $(JOBS)

## The whole test suite: every notebook (nbdev_test), then the pytest suite.
test: venv test-notebooks test-pytest

test-notebooks: venv
	cd nbs && OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 IN_TEST=1 ../$(BIN)/nbdev_test --n_workers $(NB_WORKERS) --timing

test-pytest: venv browser
	$(BIN)/python -m pytest tests -q -ra --timeout=1200

## Notebook cells flagged `#| slow` (mini-preset experiments), not part of CI.
test-slow: venv
	cd nbs && ../$(BIN)/nbdev_test --flags slow --n_workers 1 --timing

## Developer helpers.
export: venv
	cd nbs && ../$(BIN)/nbdev_export

clean-nbs: venv
	cd nbs && ../$(BIN)/nbdev_clean
