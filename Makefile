# PhoenixQ — `make up` brings the topology up, `make test` runs the tests.
# Everything installs from this project's files into .venv (Python 3.11+ needed).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast test-fault lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install PhoenixQ with its test tools

test: $(STAMP) ## the whole suite: lint, unit, integration, end-to-end and fault tests
	$(PY) -m ruff check .
	$(PY) -m pytest -q

test-fast: $(STAMP) ## everything but the fault suite
	$(PY) -m pytest -q -m "not fault"

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) var .pytest_cache
