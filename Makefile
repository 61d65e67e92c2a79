# Two commands on a fresh machine with Python >= 3.11 and make:
#   make run    the service on its embedded defaults (embedded Postgres, simulated upstream)
#   make test   the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE := tests/node
NODE_STAMP := $(NODE)/node_modules/.package-lock.json

.PHONY: run test lint typecheck deploy-check bench clean chromium

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

# The pinned @codesandbox/sdk and TypeScript for the SDK-compatibility tests.
$(NODE_STAMP): $(NODE)/package.json $(NODE)/package-lock.json
	cd $(NODE) && npm ci --no-audit --no-fund

# Debian's Chromium drives the browser end-to-end test (no browser is ever downloaded).
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

run: $(STAMP)
	$(BIN)/corral serve

test: $(STAMP) $(NODE_STAMP) chromium
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	bash .ci/validate-deploy
	cd $(NODE) && npx --no-install tsc --noEmit -p .
	$(BIN)/pytest
	PYTHON=$(PYTHON) bash .ci/check-wheel

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Dockerfile, compose file, Kubernetes manifests, alert rules and dashboard (no engine needed).
deploy-check: $(STAMP)
	bash .ci/validate-deploy

clean:
	rm -rf $(VENV) .data
