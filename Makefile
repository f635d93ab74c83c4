# rlvr: `make test` and `make quickstart` install what they need into .venv first.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rlvr-installed

# `make lab`: the entropy lab (docs/ENTROPY_LAB.md), its arms under paired seeds, then its report and verdicts.
# `make lab-long`: every arm, so every contrast (52 runs; LAB_SEEDS/LAB_STEPS raise the seeds and steps).
LAB_ARMS ?= base,clip_higher,top20,bottom80,entropy_bonus,eval_seed
LAB_SEEDS ?= 0,1,2,3
LAB_STEPS ?= 40
LAB_DIR ?= runs/lab
LAB_OVERRIDES ?=  # more Hydra overrides for every run, e.g. rollout=vllm (the engine of the published results)
LAB_LONG_ARMS = base,clip_higher,top20,bottom80,entropy_bonus,eval_seed,dynamic_sampling,seq_mean,no_clip,clip_cov,kl_cov,kl,kl_reset

.PHONY: install test quickstart lab lab-long lint format clean

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
	$(BIN)/rlvr-train -m experiment=lab lab=$(LAB_ARMS) trainer.seed=$(LAB_SEEDS) trainer.total_steps=$(LAB_STEPS) \
		trainer.save_every=$(LAB_STEPS) hydra.sweep.dir=$(LAB_DIR) $(LAB_OVERRIDES)
	$(BIN)/rlvr-report $(LAB_DIR)

lab-long:
	$(MAKE) lab LAB_ARMS=$(LAB_LONG_ARMS) LAB_DIR=runs/lab-long

lint: install
	$(BIN)/ruff check rlvr tests scripts benchmarks
	$(BIN)/ruff format --check rlvr tests scripts benchmarks

format: install
	$(BIN)/ruff format rlvr tests scripts benchmarks
	$(BIN)/ruff check --fix rlvr tests scripts benchmarks

clean:
	rm -rf runs multirun .cache/rlvr
