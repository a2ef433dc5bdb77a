# carewatch: the front door. `make run` runs the system, `make test` passes the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# `make run` registers the local RabbitMQ user as a development feed for every provider.
DEV_FEED_USER ?= guest

.DEFAULT_GOAL := help
.PHONY: help install run test test-unit test-integration test-e2e test-faults test-fuzz demo bench lint up down clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed ## create .venv with the pinned dependencies

run: install ## migrate, declare, seed and run the four services here (Ctrl-C stops all)
	CAREWATCH_DEV_FEED_USER=$${CAREWATCH_DEV_FEED_USER-$(DEV_FEED_USER)} \
	CAREWATCH_LOG_FORMAT=$${CAREWATCH_LOG_FORMAT-text} $(BIN)/carewatch run

test: install ## every test: unit, integration (real RabbitMQ + PostgreSQL), end to end
	$(BIN)/python -m pytest

test-unit: install ## pure logic only, no services needed
	$(BIN)/python -m pytest tests/unit

test-integration: install ## each service against the real broker and database
	$(BIN)/python -m pytest tests/integration

test-e2e: install ## the whole system as processes, driven like an operator would
	$(BIN)/python -m pytest tests/e2e

test-faults: install ## kill -9 each service, restart RabbitMQ and PostgreSQL, refuse mail: nothing lost
	$(BIN)/python -m pytest tests/faults -m faults -s

test-fuzz: install ## 10,000 hostile submissions and property tests of the intake contract
	$(BIN)/python -m pytest tests/fuzz -m fuzz -s

demo: install ## replay a month of realistic feedback into the running system (make run first)
	$(BIN)/python -m tools.demo

bench: install ## measure throughput, latency, memory and an ICB's year; writes BENCHMARKS.md
	$(BIN)/python -m tools.bench

lint: install ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/mypy shared services

up: ## the whole stack with docker compose (needs a Docker engine)
	docker compose up --build

down: ## stop the compose stack
	docker compose down

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var
