# rlvr: `make test` and `make quickstart` install what they need into .venv first.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rlvr-installed

# `make lab`: the entropy lab (docs/ENTROPY_LAB.md), every method under every seed, then its report
LAB_METHODS ?= grpo,dapo,forking_tokens,prorl,clip_cov,kl_cov
LAB_SEEDS ?= 0,1,2
LAB_DIR ?= runs/lab

.PHONY: install test quickstart lab lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	scripts/install.sh $(VENV)
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

quickstart: install
	$(BIN)/rlvr-train experiment=quickstart
	$(BIN)/rlvr-report runs/quickstart

lab: install
	$(BIN)/rlvr-train -m experiment=lab lab=$(LAB_METHODS) trainer.seed=$(LAB_SEEDS) hydra.sweep.dir=$(LAB_DIR)
	$(BIN)/rlvr-report $(LAB_DIR)

lint: install
	$(BIN)/ruff check rlvr tests scripts benchmarks
	$(BIN)/ruff format --check rlvr tests scripts benchmarks

format: install
	$(BIN)/ruff format rlvr tests scripts benchmarks
	$(BIN)/ruff check --fix rlvr tests scripts benchmarks

clean:
	rm -rf runs multirun .cache/rlvr
