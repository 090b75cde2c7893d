# The two commands of the README: `make run` (local stack, sample requests, live outcome table)
# and `make test` (static checks and the whole test suite). Both set up a fresh machine first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup run test lint typecheck pytest clean

$(STAMP): requirements.txt requirements-dev.txt package.json package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	npm ci --no-audit --no-fund --loglevel=error
	touch $(STAMP)

# checkov scans infra/ (tests/infra/test_checkov.py) from its own virtualenv: its pins clash with
# the app's, and it bundles an old pycep-parser. The stamp names the version, so a bump reinstalls.
# The venv's own .gitignore (as Python 3.13's venv writes) keeps it out of git and out of ruff.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV    := .venv-checkov
CHECKOV_STAMP   := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

$(CHECKOV_STAMP):
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	echo '*' > $(CHECKOV_VENV)/.gitignore
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)
	touch $(CHECKOV_STAMP)

# Azure's resource models (azure-mgmt-* SDKs) for tests/infra/test_resource_models.py, in their own
# virtualenv like checkov's: 260 MB of SDKs the app does not need. Pins in the requirements file.
AZMODELS_VENV  := .venv-azmodels
AZMODELS_REQS  := tests/infra/azmodels-requirements.txt
AZMODELS_STAMP := $(AZMODELS_VENV)/.installed-stamp

$(AZMODELS_STAMP): $(AZMODELS_REQS)
	test -x $(AZMODELS_VENV)/bin/python || $(PYTHON) -m venv $(AZMODELS_VENV)
	echo '*' > $(AZMODELS_VENV)/.gitignore
	$(AZMODELS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AZMODELS_VENV)/bin/python -m pip install --quiet -r $(AZMODELS_REQS)
	touch $(AZMODELS_STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/python -m devstack run $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache  # the architecture's rooms and layers: .importlinter

typecheck: setup
	$(BIN)/mypy

pytest: setup $(CHECKOV_STAMP) $(AZMODELS_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules .devstack .pytest_cache .mypy_cache .ruff_cache
