# Two commands do all set-up:  `make run` starts Shoal, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
AZVENV := .venv-az
PY := $(VENV)/bin/python
STATE_DIR ?= $(HOME)/.shoal
PORT ?= 8443

.PHONY: run test lint typecheck unit venv az clean clean-test-cache bench quickstart fuzz

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(AZVENV)/.installed: Makefile
	$(PYTHON) -m venv $(AZVENV)
	$(AZVENV)/bin/python -m pip install --quiet --upgrade pip
	$(AZVENV)/bin/python -m pip install --quiet 'azure-cli==2.91.0'  # pinned: a new release must not change CI
	touch $@

venv: $(VENV)/.installed

az: $(AZVENV)/.installed

## Start Shoal with its embedded defaults (https://127.0.0.1:8443, SQLite in ~/.shoal): make run PORT=9443 STATE_DIR=DIR
run: venv
	$(VENV)/bin/shoal serve --state-dir $(STATE_DIR) --port $(PORT)

lint: venv
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/lint-imports

typecheck: venv
	$(VENV)/bin/mypy

## Lint, type-check and run every test (the az CLI is installed into .venv-az for the CLI tests).
test: venv az lint typecheck
	SHOAL_REQUIRE_AZ=1 $(PY) -m pytest $(PYTEST_ARGS)

## The seed's whole workflow against the Shoal started by `make run` (in another terminal).
quickstart: venv
	@$(PY) -c 'import azure.batch, azure.identity, azure.mgmt.batch, azure.mgmt.compute, azure.mgmt.resource, requests' \
		2>/dev/null || $(PY) -m pip install --quiet -e '.[clients]'
	$(VENV)/bin/shoal quickstart --state-dir $(STATE_DIR) $(QUICKSTART_ARGS)

clean:
	rm -rf $(VENV) $(AZVENV) .pytest_cache .mypy_cache .ruff_cache

## The Debian base builds the tests keep in their scratch directory (SHOAL_TEST_TMP, default /dev/shm) for later runs.
clean-test-cache:
	rm -rf $${SHOAL_TEST_TMP:-/dev/shm}/shoal-base-cache $${SHOAL_TEST_TMP:-/dev/shm}/shoal-debian-cache

## A longer fuzzing campaign than the test suite's (examples per operation: FUZZ_EXAMPLES).
fuzz: venv
	SHOAL_FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-200} $(PY) -m pytest -q -s -k "not postgres" tests/test_fuzz.py
