# carewatch: the front door. `make run` runs the system, `make test` passes the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# `make run` is for a development machine: its RabbitMQ is guest/guest and its PostgreSQL
# trusts local users, so it runs in development mode (weak credentials accepted, with a
# warning; every service publishes as the one broker user). DEV_MODE=0 refuses them.
DEV_MODE ?= 1
# The development feed: the local guest user, registered for the example's provider only
# (RJ1, examples/submissions/serious-complaint.json), never for every provider.
DEV_FEED_USER ?= guest
DEV_FEED_ODS ?= RJ1

.DEFAULT_GOAL := help
.PHONY: help setup install run test test-pythons test-unit test-integration test-e2e test-security test-faults test-fuzz demo bench eval lint secrets up down clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The workspace's NHS.UK frontend and the browser tests' axe-core (pinned in package.json and
# package-lock.json), served from node_modules/: nothing comes from a CDN at run time.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: ## install (apt-get, sudo if needed) and start what is missing: RabbitMQ, PostgreSQL
	@deploy/setup-local.sh --quiet

install: $(BIN)/.installed node_modules/.installed ## create .venv with the pinned dependencies (and npm's)

run: setup install ## migrate, declare, seed and run the five services here (Ctrl-C stops all)
	CAREWATCH_DEV_MODE=$${CAREWATCH_DEV_MODE-$(DEV_MODE)} \
	CAREWATCH_BROKER_USERS=$${CAREWATCH_BROKER_USERS-'{"*": "guest"}'} \
	CAREWATCH_DEV_FEED_USER=$${CAREWATCH_DEV_FEED_USER-$(DEV_FEED_USER)} \
	CAREWATCH_DEV_FEED_ODS=$${CAREWATCH_DEV_FEED_ODS-$(DEV_FEED_ODS)} \
	CAREWATCH_LOG_FORMAT=$${CAREWATCH_LOG_FORMAT-text} $(BIN)/carewatch run

test: setup install ## every test: unit, integration (real RabbitMQ + PostgreSQL), end to end
	$(BIN)/python -m pytest --durations=25

test-unit: install ## pure logic only, no services needed
	$(BIN)/python -m pytest tests/unit

test-pythons: ## the unit tests on every other Python 3.11-3.14 found here (own venvs)
	@.ci/pythons

test-integration: install ## each service against the real broker and database
	$(BIN)/python -m pytest tests/integration

test-e2e: install ## the whole system as processes, driven like an operator would
	$(BIN)/python -m pytest tests/e2e

test-security: install ## replay the attacks of issue 14: tried / refused / leaked for each
	$(BIN)/python -m pytest tests/security -m security -s

test-faults: install ## kill -9 each service, restart RabbitMQ and PostgreSQL, refuse mail: nothing lost
	$(BIN)/python -m pytest tests/faults -m faults -s

test-fuzz: install ## 10,000 hostile submissions and property tests of the intake contract
	$(BIN)/python -m pytest tests/fuzz -m fuzz -s

demo: install ## replay two years of feedback into the running system, then draw charts (make run first)
	$(BIN)/python -m tools.demo

bench: install ## measure throughput (1 and 2 replicas), latency, memory, an ICB's year and a national FFT year (extrapolated); writes BENCHMARKS.md
	$(BIN)/python -m tools.bench

eval: install ## precision/recall of the harm pipeline on the held-out test set (EVAL_ARGS=--dev: the dev set)
	$(BIN)/python -m tools.eval $(EVAL_ARGS)

lint: install ## ruff and mypy (strict on shared/, the contract code; also services, tools, tests)
	$(BIN)/ruff check .
	$(BIN)/mypy --strict shared
	$(BIN)/mypy shared services tools tests

secrets: install ## random credentials into .env (0600) and the broker definitions, if absent
	$(BIN)/carewatch secrets init

up: secrets ## the whole stack with docker compose (needs a Docker engine)
	docker compose up --build

down: ## stop the compose stack
	docker compose down

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var
