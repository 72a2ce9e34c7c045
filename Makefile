# smp-profiler: run `make help` for the targets.
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

help:  ## Show this help.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup:  ## Install Debian packages, the venv with Debian's BCC, and the Python deps (idempotent).
	@scripts/setup.sh

demo: setup  ## Build the local node, run a short load sweep with the profiler, write ./smp-results/.
	$(BIN)/smp-profiler demo --output-dir smp-results

test: setup  ## Run the whole test suite (real BPF, real Envoy; needs root).
	$(BIN)/pytest --durations=25 $(PYTEST_ARGS)

unit: setup  ## Run only the unit tests (no root needed).
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

lint: setup  ## ruff and mypy --strict.
	$(BIN)/ruff check profiler tests benchmarks
	$(BIN)/ruff format --check profiler tests benchmarks
	$(BIN)/mypy --strict profiler

bench: setup  ## Run the benchmarks; results under benchmarks/results/.
	$(BIN)/python -m benchmarks

.PHONY: help setup demo test unit lint bench
