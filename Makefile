# The two commands the README promises: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements-dev.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test test-long lint typecheck unit e2e lock clean docs screenshots bench-agent bench-checkin bench-wakeup bench-download bench-rollout bench-delta bench-tuf

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fleetcast demo

lint: $(STAMP)
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/ruff format --check src tests $(wildcard bench)

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -q

unit: $(STAMP)
	$(BIN)/pytest -q -m "not e2e"

e2e: $(STAMP)
	$(BIN)/pytest -q -m e2e

# Regenerate the lock from pyproject.toml (needs network access to the package index).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e '.[dev]'
	(echo "# Pinned dependencies for development and CI. Regenerate with \`make lock\`."; .lock-venv/bin/pip freeze --exclude-editable) > requirements-dev.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Regenerate the generated docs (the CLI reference).
docs: $(STAMP)
	$(BIN)/python -m fleetcast.cli._reference docs/cli.md

# Refresh the console screenshots shown in the README (runs the browser tests).
screenshots: $(STAMP)
	FLEETCAST_UPDATE_SCREENSHOTS=1 $(BIN)/pytest -q tests/console/test_console.py

# Benchmarks print ratios against a baseline run in the same script.
bench-agent: $(STAMP)
	$(BIN)/python bench/agent/bench_agent.py
bench-checkin: $(STAMP)
	$(BIN)/python bench/checkin.py
bench-wakeup: $(STAMP)
	$(BIN)/python bench/fleet.py wakeup
bench-download: $(STAMP)
	$(BIN)/python bench/download.py
bench-rollout: $(STAMP)
	$(BIN)/python bench/fleet.py rollout

# The long fault-injection variants (CI runs them too).
test-long: $(STAMP)
	FLEETCAST_LONG_FUZZ=1 FLEETCAST_LONG_FAULTS=1 FLEETCAST_LONG_SOAK=1 $(BIN)/pytest -q tests/fuzz tests/agent/test_power_cut_every_write.py tests/agent/test_power_cut_tuf.py tests/e2e/test_hostile_network.py tests/e2e/test_hostile_network_tuf.py tests/e2e/test_server_crash.py tests/e2e/test_soak.py
bench-delta: $(STAMP)
	$(BIN)/python bench/delta/run.py
bench-tuf: $(STAMP)
	$(BIN)/python bench/tuf_metadata.py
