# falsecl developer entry points. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1

.PHONY: install test lint typecheck unit demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy src

unit: $(STAMP)
	$(BIN)/pytest -q --durations=15

test: lint typecheck unit

demo: $(STAMP)
	$(BIN)/falsecl data check dubai data/dubai_aerial --split train
	$(BIN)/python benchmarks/loss_speed.py --repeats 20

bench: $(STAMP)
	$(BIN)/python benchmarks/loss_speed.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
