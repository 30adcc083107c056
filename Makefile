PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test docs bench lint torture clean venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/streamkit demo

# Test files run in parallel (pytest-xdist), a file's tests on one worker: one
# worker per core, at most 4 (the slow tests wait on subprocesses and S3).
test: $(STAMP)
	$(BIN)/python -m pytest -q -W error -n auto --maxprocesses 4 --dist loadfile tests streamkit

# The documentation site, into ./site (git-ignored); strict: any warning fails it.
# It executes the notebooks first (docs/_hooks.py); tests/test_docs.py builds it in `make test`.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# Every crash point (local; a sample on S3), 200 SIGKILL trials (local and S3)
# and 100 runs at each of 10% and 30% wire faults, each compared with an
# uninterrupted run (about 85 minutes on 2 cores); figures in docs/RELIABILITY.md.
torture: $(STAMP)
	$(BIN)/python -m tests.torture --crashpoints --kill-trials 200 --wire-trials 100 --rates 0.1,0.3

lint: $(STAMP)
	$(BIN)/ruff check streamkit tests benchmarks notebooks
	$(BIN)/ruff format --check streamkit tests benchmarks notebooks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) streamkit-demo .pytest_cache .mypy_cache .ruff_cache
