# Jetbridge: the two commands of the README, and their parts.
#   make demo   set up, start the local stack (jetbridge up) and search flights through MCP (jetbridge demo)
#   make test   set up, lint, type-check, and run every test (unit, integration on real Kafka, end-to-end)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo up down status test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is needed"; exit 1; }
	@command -v java >/dev/null || { echo "A JDK 17+ is needed (java) to run Apache Kafka"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven (mvn) is needed to fetch the Apache Kafka jars"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	bash infra/kafka/kafka.sh fetch
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/jetbridge up
	$(BIN)/jetbridge demo

up: setup
	$(BIN)/jetbridge up

down:
	$(BIN)/jetbridge down

status:
	$(BIN)/jetbridge status

bench: setup
	$(BIN)/jetbridge bench

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest tests/unit -q

test: lint typecheck
	$(BIN)/pytest

clean: down
	rm -rf .jetbridge .mypy_cache .ruff_cache .pytest_cache
