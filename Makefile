# streamer: `make run` (demo server) and `make test` (the whole suite) work from a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: venv run test lint bench clean

# The C file too: `pip install -e` builds streamer/_speedups in place, and must again when
# it changes.
$(STAMP): pyproject.toml streamer/_speedups.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/streamer demo --dir var/demo

lint: $(STAMP)
	$(BIN)/ruff check streamer tests bench
	$(BIN)/ruff format --check streamer tests bench
	$(BIN)/mypy

test: $(STAMP) lint
	$(BIN)/pytest

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

# nginx is a baseline of the benchmark; installed here when missing (machines and CI are
# root). The harness runs it itself, on a loopback port, with its own prefix.
bench: $(BENCH_STAMP)
	command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light; }
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var build *.egg-info streamer/*.so .mypy_cache .ruff_cache .pytest_cache .hypothesis
