# tiendasync — two commands do everything: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-django test prereqs system-deps lint layers typecheck unit bench bench-quick bench-hocuspocus soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

demo-django: $(STAMP)
	$(BIN)/python examples/django_pos/demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

# The layers contract ([tool.importlinter] in pyproject.toml): imports point down only.
layers: $(STAMP)
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy --strict src/ tests/

unit: $(STAMP) prereqs
	$(BIN)/python -m pytest -q

# Beyond Python, the tests need Chromium, Node, npm and the Node test's npm packages:
# installed when that needs no password, else make stops at once naming the command to run.
prereqs:
	@$(SHELL) scripts/prereqs.sh

system-deps:
	$(SHELL) scripts/prereqs.sh install

test: prereqs lint layers typecheck unit

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks.run --full

bench-quick: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m pytest -q -m bench tests/benchmarks/test_benchmarks_smoke.py
	$(BIN)/python -m benchmarks.run --quick

# Benchmark 8, against Hocuspocus (Node): `npm ci`s benchmarks/hocuspocus first when needed.
# HP_SALES=10000 HP_ROUNDS=3 is the issue's size; `python -m benchmarks.b8_hocuspocus` alone
# runs a quick 1000.
HP_SALES ?= 10000
HP_ROUNDS ?= 3
bench-hocuspocus: $(STAMP)
	$(BIN)/python -m benchmarks.b8_hocuspocus --sales $(HP_SALES) --rounds $(HP_ROUNDS) \
		--json benchmarks/results-hocuspocus.json

soak: prereqs $(STAMP)
	TIENDASYNC_SOAK=1 TIENDASYNC_CRASH_CYCLES=300 $(BIN)/python -m pytest -q -o timeout=3600 tests -m soak

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
