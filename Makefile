# The two commands: `make run` and `make test`. Everything else builds on the same .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test browser screenshots lint proto proto-check clean version

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

# The dev environment comes from requirements-dev.lock (every version and hash pinned: `make lock` writes it from
# pyproject.toml's extra `dev`, which includes `server` and `embedded`), then authsvc itself, editable, without
# resolving anything again.
$(STAMP): pyproject.toml requirements-dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "authsvc needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP) ## create .venv and install authsvc with its dev tools (from requirements-dev.lock)

run: $(STAMP) ## start the server (embedded PostgreSQL unless AUTHSVC_DATABASE_URL is set) with the console on localhost
	AUTHSVC_CONSOLE_PORT=$${AUTHSVC_CONSOLE_PORT:-8090} AUTHSVC_CONSOLE_LOGIN_LINK=$${AUTHSVC_CONSOLE_LOGIN_LINK:-true} \
	  $(BIN)/authsvc serve

test: $(STAMP) browser ## run the whole test suite
	$(BIN)/pytest

# The console's browser tests drive Debian's chromium through chromium-driver (tests/browser.py).
browser: ## install chromium and chromium-driver when missing (apt-get, as root or with sudo)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; \
	elif command -v apt-get >/dev/null && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; \
	else echo "make browser: cannot install chromium and chromium-driver here (needs apt-get as root); the browser tests skip"; fi

screenshots: $(STAMP) browser ## refresh docs/console/*.png from a run of the console's browser test
	AUTHSVC_SCREENSHOTS=docs/console $(BIN)/pytest -q tests/test_console.py

lint: $(STAMP) proto-check ## ruff, mypy and the generated-stub check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

proto: $(STAMP) ## regenerate the Python stubs in authsvc/v1 from protos/
	PYTHON=$(BIN)/python scripts/gen_protos.sh

proto-check: $(STAMP) ## fail when the committed stubs differ from what protos/ generate
	@rm -rf .proto-check && PYTHON=$(BIN)/python scripts/gen_protos.sh .proto-check 2>/dev/null
	@diff -r -q .proto-check/authsvc/v1 authsvc/v1 -x __pycache__ \
	  || { echo "generated stubs are stale: run 'make proto' and commit"; rm -rf .proto-check; exit 1; }
	@rm -rf .proto-check && echo "generated stubs match protos/"

version: ## set the version of both clients: make version VERSION=x.y.z (then add it to CHANGELOG.md)
	@test -n "$(VERSION)" || { echo "usage: make version VERSION=x.y.z" >&2; exit 2; }
	$(PYTHON) scripts/set_version.py $(VERSION)

clean: ## remove the virtualenv and caches (keeps .authsvc data)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .proto-check

-include mk/*.mk
