# co2: every target installs what it needs first, so each works on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(PYTHON) -m uv
SOURCE ?= local
PYTEST_ARGS ?=

.PHONY: install tools run status down test test-fast lint format bench clean help

help:
	@echo "make install   create .venv from uv.lock (all extras and dev tools)"
	@echo "make run       start the local platform (co2 up) and run the retraining DAG once (SOURCE=local|live)"
	@echo "make status    what of the local platform runs; make down stops it"
	@echo "make tools     Debian tools the tests run: docker-compose, promtool/prometheus, alertmanager/amtool, chromium/chromedriver"
	@echo "make test      lint, type-check and run every test"
	@echo "make test-fast the tests that need no server (under a minute): steps' cores, model, vocabulary, API checks"
	@echo "make lint      ruff and mypy only"
	@echo "make bench     benchmarks under bench/ (long)"

# Bytecode compiled once here: every process of the platform and the tests then starts from it
# (with PYTHONDONTWRITEBYTECODE set, Python would compile each module again in every process).
install:
	$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --all-extras --python 3.11 --compile-bytecode

# The deployment checks (tests/deploy) and the platform's browser tests (tests/platform) run these;
# an apt index is fetched only if an install needs it.
APT_TOOLS := docker-compose:docker-compose promtool:prometheus prometheus:prometheus \
	chromium:chromium chromedriver:chromium-driver prometheus-alertmanager:prometheus-alertmanager amtool:prometheus-alertmanager
tools:
	@for pair in $(APT_TOOLS); do \
	  command -v "$${pair%%:*}" >/dev/null && continue; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$${pair#*:}" \
	    || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$${pair#*:}"; }; \
	done

# The whole platform as local processes (kept running: `make down` stops it), then one DAG run.
run: install tools
	$(UV) run --frozen --no-sync co2 up
	$(UV) run --frozen --no-sync co2 trigger $(if $(filter live,$(SOURCE)),--source live)

status: install
	$(UV) run --frozen --no-sync co2 status

down: install
	$(UV) run --frozen --no-sync co2 down

lint: install
	$(UV) run --frozen --no-sync ruff check .
	$(UV) run --frozen --no-sync ruff format --check .
	$(UV) run --frozen --no-sync mypy

format: install
	$(UV) run --frozen --no-sync ruff format .
	$(UV) run --frozen --no-sync ruff check --fix .

# The platform's tests and the others run side by side (tests/conftest.py groups them).
test: lint tools
	$(UV) run --frozen --no-sync pytest -n 2 --dist loadscope $(PYTEST_ARGS)

# Every test that starts no server of its own (tests/conftest.py marks the others `server`).
test-fast: install
	$(UV) run --frozen --no-sync pytest -m "not server" -n 2 $(PYTEST_ARGS)

bench: install
	$(UV) run --frozen --no-sync python bench/pipeline_window.py
	command -v wrk >/dev/null || apt-get install -y wrk
	$(UV) run --frozen --no-sync python bench/serving_vs_mlflow_serve.py
	$(UV) run --frozen --no-sync python bench/stack_startup.py
	$(UV) run --frozen --no-sync python bench/promotion_to_served.py

clean:
	rm -rf .co2 .pytest_cache .mypy_cache .ruff_cache
