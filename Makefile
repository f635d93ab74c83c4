# rlvr: `make test` and `make quickstart` install what they need into .venv first.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rlvr-installed

.PHONY: install test quickstart lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	scripts/install.sh $(VENV)
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

quickstart: install
	$(BIN)/rlvr-train experiment=quickstart
	$(BIN)/rlvr-report runs/quickstart

lint: install
	$(BIN)/ruff check rlvr tests scripts benchmarks
	$(BIN)/ruff format --check rlvr tests scripts benchmarks

format: install
	$(BIN)/ruff format rlvr tests scripts benchmarks
	$(BIN)/ruff check --fix rlvr tests scripts benchmarks

clean:
	rm -rf runs multirun .cache/rlvr
