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

.PHONY: venv demo test test-notebooks test-pytest test-slow export clean-nbs

venv: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e ".[dev]"
	# the official model code, used only as the parity oracle in tests (its deps are ours already)
	$(BIN)/pip install -q --no-deps $(ORACLE_PIN)
	rm -f $(VENV)/.installed-* && touch $@

## The main job.
demo: venv
	$(BIN)/depth-anything run --sample-images --encoder vits --outdir $(RUN_DIR)

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
