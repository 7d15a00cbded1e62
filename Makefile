# The two commands of the quick start: `make run` (demo daemon) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PORT ?= 9108
BIN := $(VENV)/bin
# the daemon alone (`make run`), and the daemon with the test, lint and benchmark tools
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench-smoke schema clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(RUN_STAMP) $(STAMP)

run: $(RUN_STAMP)
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
	$(BIN)/python -m benchmarks.detection --smoke --jobs 2
	$(BIN)/python -m benchmarks.throughput --smoke
	$(BIN)/python -m benchmarks.warehouse --smoke
	$(BIN)/python -m benchmarks.soak --smoke
	$(BIN)/python -m benchmarks.soak --churn --smoke
	$(BIN)/python -m benchmarks.soak --replicas 3 --smoke
	$(BIN)/python -m benchmarks.exposition --smoke
	$(BIN)/python -m benchmarks.pages --smoke
	$(BIN)/python -m benchmarks.deployments --smoke
	$(BIN)/python -m benchmarks.calendar --smoke
	$(BIN)/python -m benchmarks.drilldown --smoke
	$(BIN)/python -m benchmarks.answers --smoke

schema: $(STAMP)
	$(BIN)/kpi-monitor validate --schema > config/kpi-monitor.schema.json

clean:
	rm -rf $(VENV) demo-data .mypy_cache .ruff_cache .pytest_cache
