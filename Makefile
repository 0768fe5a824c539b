# streamer: `make run` (demo server) and `make test` (the whole suite) work from a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: venv run test lint bench image clean tools

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

# The download clients the tests drive (tests/test_clients.py); installed only when missing.
# A tool that stays missing makes its tests fail with a message, never skip.
TOOLS := curl wget aria2c jq
tools:
	@missing=""; for tool in $(TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then sudo=""; \
		elif command -v sudo >/dev/null; then sudo="sudo -n"; \
		else echo "warning: not root and no sudo; cannot install:$$missing" >&2; exit 0; fi; \
		$$sudo apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq curl wget aria2 jq >/dev/null \
		|| echo "warning: apt-get could not install:$$missing" >&2; \
	fi

test: $(STAMP) lint tools
	$(BIN)/pytest

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

# nginx is a baseline of the benchmark; installed here when missing (machines and CI are
# root). The harness runs it itself, on a loopback port, with its own prefix.
bench: $(BENCH_STAMP)
	command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light; }
	$(BIN)/python -m bench $(BENCH_ARGS)

# The container image (deploy/Dockerfile); needs a running docker or podman engine.
IMAGE ?= streamer:dev
image:
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
		docker build -f deploy/Dockerfile -t $(IMAGE) . ; \
	elif command -v podman >/dev/null 2>&1; then \
		podman build -f deploy/Dockerfile -t $(IMAGE) . ; \
	else \
		echo "make image: no running docker or podman engine here, so no image was built." >&2; \
		echo "  The Dockerfile is still checked by make test (hadolint and tests/test_deploy.py)." >&2; \
		exit 1; \
	fi

clean:
	rm -rf $(VENV) var build *.egg-info streamer/*.so .mypy_cache .ruff_cache .pytest_cache .hypothesis
