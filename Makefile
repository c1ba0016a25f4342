# The commands people and CI run. `make up` and `make test` install what they need into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= pixelrelay.example.toml

.PHONY: install up test lint bench bench-redirect bench-relay bench-footprint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

up: install
	$(BIN)/pixelrelay up --config $(CONFIG)

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: bench-redirect bench-relay bench-footprint

bench-redirect: install
	$(BIN)/python loadtest/bench_redirect.py

bench-relay: install
	$(BIN)/python loadtest/bench_relay.py

bench-footprint: install
	$(BIN)/python loadtest/bench_footprint.py

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
