# The two commands of the quick start: `make run` (demo daemon) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PORT ?= 9108
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench-smoke schema clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/kpi-monitor demo --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

# figures, not assertions: CI runs them small so they keep working; run them full on demand
bench-smoke: $(STAMP)
	$(BIN)/python -m benchmarks.detection --smoke
	$(BIN)/python -m benchmarks.throughput --smoke
	$(BIN)/python -m benchmarks.warehouse --smoke
	$(BIN)/python -m benchmarks.soak --smoke
	$(BIN)/python -m benchmarks.exposition --smoke
	$(BIN)/python -m benchmarks.pages --smoke

schema: $(STAMP)
	$(BIN)/kpi-monitor validate --schema > config/kpi-monitor.schema.json

clean:
	rm -rf $(VENV) demo-data .mypy_cache .ruff_cache .pytest_cache
