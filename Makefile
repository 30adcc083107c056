PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test bench lint clean venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/streamkit demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -W error tests streamkit

bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check streamkit tests benchmarks notebooks
	$(BIN)/ruff format --check streamkit tests benchmarks notebooks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) streamkit-demo .pytest_cache .mypy_cache .ruff_cache
