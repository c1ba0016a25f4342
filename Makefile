# The commands people and CI run. `make up` and `make test` install what they need into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= pixelrelay.example.toml

.PHONY: install bootstrap-up bootstrap-test up test test-reliability-full lint audit loadtest bench bench-redirect bench-relay bench-footprint bench-dashboard clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# System packages (ops/system-packages.txt), installed when missing; quiet when present.
bootstrap-up bootstrap-test: bootstrap-%:
	@PYTHON=$(PYTHON) ops/bootstrap $*

# Each recipe bootstraps before it builds .venv (which may need python3-venv), in that order.
up:
	@$(MAKE) --no-print-directory bootstrap-up install
	$(BIN)/pixelrelay up --config $(CONFIG)

test:
	@$(MAKE) --no-print-directory bootstrap-test install
	$(BIN)/pytest

# The reliability table at the issue's lengths: Redis down 60 s, the fake Meta down 5 minutes
# (make test runs the same tests scaled to 5 s and 10 s). About 12 minutes; with
# PIXELRELAY_RELIABILITY_DOCS=1 it rewrites the table in docs/reliability.md. tests/reliability
# last: its secrets scan reads every log the run left.
test-reliability-full:
	@$(MAKE) --no-print-directory bootstrap-test install
	PIXELRELAY_FAULT_REDIS_OUTAGE_S=60 PIXELRELAY_FAULT_META_OUTAGE_S=300 $(BIN)/pytest \
		tests/integration/test_fault_suite.py tests/integration/test_stack_faults.py tests/reliability

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	@$(MAKE) --no-print-directory audit

# Installed packages against PyPI's advisories (pip-audit --strict: a package that could not be
# checked fails the audit instead of passing unchecked); an unreachable advisory service is said
# so in one sentence (ops/audit.py).
audit: install
	$(BIN)/python ops/audit.py

# A private stack, locust's `day` shape (50,000 events) headless, and a report in var/loadtest/.
# LOADTEST_ARGS passes options to loadtest/run.py (e.g. --host/--redis-url/--fake-meta-url).
loadtest:
	@$(MAKE) --no-print-directory bootstrap-test install
	$(BIN)/python loadtest/run.py $(LOADTEST_ARGS)

# Every benchmark side by side in one run, with ratios; writes docs/performance.md. The three
# below stay as they were (each one benchmark in full, with its own options).
bench: install
	$(BIN)/python loadtest/bench.py $(BENCH_ARGS)

bench-redirect: install
	$(BIN)/python loadtest/bench_redirect.py

bench-relay: install
	$(BIN)/python loadtest/bench_relay.py

# About 18 minutes of mostly waiting (a 2-minute outage twice, scaled 30-minute and token runs, a replaced token).
bench-outage: install
	$(BIN)/python loadtest/bench_outage.py

bench-footprint: install
	$(BIN)/python loadtest/bench_footprint.py

# Every dashboard page on a full Redis (7 days of counters, 1M ledger entries, 100k dead letters).
bench-dashboard: install
	$(BIN)/python loadtest/bench_dashboard.py

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
