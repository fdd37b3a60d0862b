# The two commands of the README's quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit system-deps bench clean

$(BIN)/opskit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/opskit

demo: $(BIN)/opskit
	$(BIN)/opskit demo

system-deps:
	bash scripts/install-system-deps.sh

lint: $(BIN)/opskit
	$(BIN)/ruff check opskit tests benchmarks
	$(BIN)/ruff format --check opskit tests benchmarks
	$(BIN)/lint-imports

typecheck: $(BIN)/opskit
	$(BIN)/mypy opskit

unit: $(BIN)/opskit system-deps
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(BIN)/opskit system-deps
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .opskit .pytest_cache .mypy_cache .ruff_cache
