# Developer and CI entry points. Everything runs from the project's own .venv.
#   make test    lint + the whole test suite (installs what it needs first)
#   make demo    the quickstart example        make bench   the benchmarks (bench-peers: vs peers)
#   make chaos   the reliability scenarios (kills, restarts, garbage; docs/reliability.md)
# The test suite starts its own throwaway Redis and RabbitMQ servers on loopback
# (tests/servers.py); `make services` only installs the packages (and Chromium, for the
# dashboard's browser tests), it starts nothing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Rewritten after each successful install: a newer pyproject.toml triggers a reinstall.
STAMP := $(VENV)/.installed
RABBITMQ_SERVER := /usr/lib/rabbitmq/bin/rabbitmq-server
# Debian's Chromium, which Playwright drives in the dashboard's browser tests.
CHROMIUM := /usr/bin/chromium

.PHONY: venv services lint test demo bench bench-peers chaos clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

services:
	@if command -v redis-server >/dev/null 2>&1 && [ -x $(RABBITMQ_SERVER) ] && [ -x $(CHROMIUM) ]; then \
		echo "redis-server, rabbitmq-server and chromium are installed"; \
	else \
		if [ "$$(id -u)" = 0 ]; then sudo=; \
		elif command -v sudo >/dev/null 2>&1; then sudo=sudo; \
		else echo "installing redis-server, rabbitmq-server and chromium needs root (no sudo found)" >&2; exit 1; \
		fi; \
		set -x; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server rabbitmq-server chromium; \
	fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: venv services lint
	$(BIN)/pytest -q -p no:cacheprovider

demo: venv
	$(BIN)/python examples/quickstart/demo.py

bench: venv
	$(BIN)/python -m benchmarks

# The same workloads against the peers too, each in its own venv under benchmarks/.peers/.
bench-peers: venv
	$(BIN)/python -m benchmarks --peers

# Real servers and worker processes, killed and fed garbage; `python -m chaos --short` is quick.
chaos: venv
	$(BIN)/python -m chaos

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache taskq.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
