# make up    : from a fresh clone, create .venv, install, migrate, run everything in one process (demo)
# make test  : from a fresh clone, create .venv with dev extras, start what tests need, run ruff, mypy, pytest
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
export HANDOFF_LOG_LEVEL ?= INFO

.PHONY: up test lint typecheck unit integration e2e bench clean venv system-deps postgres lock

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

up: venv
	$(BIN)/handoff migrate
	$(BIN)/handoff up

# Debian's Chromium drives the dashboard's browser test; PostgreSQL runs on these machines already,
# and is started if it is installed but stopped. The Kafka-protocol broker is started by the tests.
system-deps:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { echo "installing Debian's chromium for the browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	    echo "warning: could not install chromium (the browser test will say so)"; }

postgres:
	@command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432 && \
	  command -v pg_ctlcluster >/dev/null 2>&1 && \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -1) main start || true

lint: venv
	$(BIN)/ruff check services ingest scoring router notifier tests scripts

typecheck: venv
	$(BIN)/mypy

test: venv system-deps postgres lint typecheck
	$(BIN)/python -m pytest -p no:cacheprovider -q -ra --durations=15 tests

unit: venv
	$(BIN)/python -m pytest -p no:cacheprovider -q tests/unit

integration: venv postgres
	$(BIN)/python -m pytest -p no:cacheprovider -q tests/integration

bench: venv
	$(BIN)/handoff bench

# Re-resolve pyproject.toml's ranges in a scratch venv and pin the result in constraints.txt.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q -e '.[dev]'
	{ sed -n '/^#/p' constraints.txt; .lock-venv/bin/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .lock-venv
	@echo "constraints.txt rewritten; run make test before committing it"

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache test-output handoff.db handoff.db-*
