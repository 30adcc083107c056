PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test bench lint torture clean venv

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

# >= 200 SIGKILL trials (local and S3) and >= 200 runs under 10% and 30% wire
# faults, each compared with an uninterrupted run (about an hour on 2 cores).
torture: $(STAMP)
	$(BIN)/python -m tests.torture --kill-trials 200 --wire-trials 100 --rates 0.1,0.3

lint: $(STAMP)
	$(BIN)/ruff check streamkit tests benchmarks notebooks
	$(BIN)/ruff format --check streamkit tests benchmarks notebooks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) streamkit-demo .pytest_cache .mypy_cache .ruff_cache
