# Jetbridge: the two commands of the README, and their parts.
#   make demo   set up, start the local stack (jetbridge up) and search flights through MCP (jetbridge demo)
#   make test   set up, lint, type-check, and run every test (unit, integration on real Kafka, end-to-end)
#   make up SCALE=streams=2,connectors=2    the stack with more stream and connector instances
#
# The set-up says a line per step; pip's and Maven's output go to $(SETUP_LOG).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JB_HOME ?= .jetbridge
SETUP_LOG := $(JB_HOME)/logs/setup.log

.PHONY: setup demo up down status test lint typecheck unit bench clean

$(STAMP): pyproject.toml tools/conformance/package-lock.json tools/asyncapi/package-lock.json
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is needed"; exit 1; }
	@command -v java >/dev/null || { echo "A JDK 17+ is needed (java) to run Apache Kafka"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven (mvn) is needed to fetch the Apache Kafka jars"; exit 1; }
	@mkdir -p $(dir $(SETUP_LOG))
	@echo "set-up: installing the project into $(VENV) (about a minute the first time; log: $(SETUP_LOG))"
	@{ test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); } >>$(SETUP_LOG) 2>&1
	@{ $(BIN)/python -m pip install --quiet --upgrade pip && $(BIN)/python -m pip install --quiet -e '.[dev]'; } \
		>>$(SETUP_LOG) 2>&1 || { echo "pip install failed; last lines of $(SETUP_LOG):"; tail -n 20 $(SETUP_LOG); exit 1; }
	@bash infra/kafka/kafka.sh fetch
	@echo "set-up: the MCP conformance suite and the AsyncAPI parser (npm, tools/) and Redis (apt, when missing)"
	@npm ci --prefix tools/conformance --no-audit --no-fund >>$(SETUP_LOG) 2>&1 || { echo "npm ci --prefix \
		tools/conformance failed (Node.js and npm are needed: the MCP conformance suite); last lines of \
		$(SETUP_LOG):"; tail -n 20 $(SETUP_LOG); exit 1; }
	@npm ci --prefix tools/asyncapi --no-audit --no-fund >>$(SETUP_LOG) 2>&1 || { echo "npm ci --prefix \
		tools/asyncapi failed (the AsyncAPI parser that checks docs/asyncapi.json); last lines of \
		$(SETUP_LOG):"; tail -n 20 $(SETUP_LOG); exit 1; }
	@bash infra/redis/redis.sh install
	@touch $(STAMP)
	@echo "set-up: done"

setup: $(STAMP)

demo: setup
	@$(BIN)/jetbridge up
	@echo
	@$(BIN)/jetbridge demo

up: setup
	@$(BIN)/jetbridge up $(if $(SCALE),--scale $(SCALE))

down:
	@$(BIN)/jetbridge down

status:
	@$(BIN)/jetbridge status

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
	$(BIN)/jetbridge schemas check --offline
	$(BIN)/pytest

clean: down
	rm -rf .jetbridge .mypy_cache .ruff_cache .pytest_cache
