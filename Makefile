# streamer: `make run` (demo server) and `make test` (the whole suite) work from a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test
RUN_STAMP := $(VENV)/.installed-run
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: venv run test lint bench image clean tools sanitize fuzz lock lock-check deps-check

# The test set exactly as locked (every package pinned, with its hashes), then streamer itself
# without dependencies; then the locks are checked against pyproject.toml (lock-check). The C
# file too: `pip install -e` builds streamer/_speedups in place, and must again when it changes.
$(STAMP): pyproject.toml requirements/test.lock streamer/_speedups.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/test.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(MAKE) --no-print-directory lock-check
	touch $@

venv: $(STAMP)

# The demo needs the runtime only (no test toolchain): its own stamp, so that `make run`
# on a fresh clone installs in seconds, and `make test` later adds the test extra.
$(RUN_STAMP): pyproject.toml streamer/_speedups.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

run: $(RUN_STAMP)
	$(BIN)/streamer demo --dir var/demo

lint: $(STAMP)
	$(BIN)/ruff check streamer testkit tests bench
	$(BIN)/ruff format --check streamer testkit tests bench
	$(BIN)/mypy
	@# Security lint; each ignore is a `# nosec BXXX` whose reason is the comment above it.
	$(BIN)/bandit -q -r streamer

# The TypeScript client of tests/test_generated_client.py: its npm packages (exact versions in
# tests/ts/package.json) installed into build/ when missing.
# Node.js and npm, from apt-get when missing: the TypeScript client's tools and Azurite.
NEED_NPM = command -v npm >/dev/null || { apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }

TS_CLIENT := build/ts-client
$(TS_CLIENT)/node_modules/.bin/tsc: tests/ts/package.json
	@$(NEED_NPM)
	mkdir -p $(TS_CLIENT) && cp tests/ts/package.json $(TS_CLIENT)/
	cd $(TS_CLIENT) && npm install --no-audit --no-fund --no-package-lock --silent
	touch $@

# The download clients the tests drive (tests/test_clients.py) and the headless browser of
# tests/test_browser.py; installed only when missing. A tool that stays missing makes its
# tests fail with a message, never skip.
TOOLS := curl wget aria2c jq chromium chromedriver
tools: $(TS_CLIENT)/node_modules/.bin/tsc
	@missing=""; for tool in $(TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then sudo=""; \
		elif command -v sudo >/dev/null; then sudo="sudo -n"; \
		else echo "warning: not root and no sudo; cannot install:$$missing" >&2; exit 0; fi; \
		$$sudo apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq curl wget aria2 jq chromium chromium-driver >/dev/null \
		|| echo "warning: apt-get could not install:$$missing" >&2; \
	fi

# Azurite, the Azure Blob emulator the Azure tests start (npm; Node.js comes from apt-get
# when missing), kept in build/ beside the other test builds.
AZURITE_VERSION := 3.37.0
AZURITE := build/azurite/node_modules/.bin/azurite-blob
$(AZURITE):
	@$(NEED_NPM)
	npm install --prefix build/azurite --no-audit --no-fund --silent azurite@$(AZURITE_VERSION)

# The suite waits on sockets and emulators more than it computes: three processes keep two
# cores busy (each starts its own emulators). A file's tests share a process, so a module's
# fixtures (the benchmark's quick run) are made once.
PYTEST_WORKERS ?= 3
test: $(STAMP) lint tools sanitize $(AZURITE)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

# requirements/*.lock: every package of the runtime set and of the test set, pinned with its
# hashes, resolved for CPython 3.11 on Linux x86_64 (the image's and CI's). The test set is
# constrained by the runtime set, so the two agree. `make lock` takes the newest versions
# pyproject.toml allows; `make lock-check` fails when pyproject.toml has changed since (it
# resolves again keeping every pin, and compares). See docs/dependencies.md.
LOCK_DIR ?= build/lock
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes \
	--python-version 3.11 --python-platform x86_64-manylinux_2_28 --custom-compile-command 'make lock'
LOCK_TEST_ARGS = --extra test -c requirements/runtime.lock

lock: $(STAMP)
	$(UV_COMPILE) --upgrade -o requirements/runtime.lock
	$(UV_COMPILE) --upgrade $(LOCK_TEST_ARGS) -o requirements/test.lock

lock-check:
	rm -rf $(LOCK_DIR) && mkdir -p $(LOCK_DIR)
	cp requirements/runtime.lock requirements/test.lock $(LOCK_DIR)/
	$(UV_COMPILE) -o $(LOCK_DIR)/runtime.lock
	$(UV_COMPILE) $(LOCK_TEST_ARGS) -o $(LOCK_DIR)/test.lock
	@cmp -s $(LOCK_DIR)/runtime.lock requirements/runtime.lock && \
		cmp -s $(LOCK_DIR)/test.lock requirements/test.lock || \
		{ echo "requirements/*.lock do not match pyproject.toml: run make lock" >&2; \
		diff -u requirements/test.lock $(LOCK_DIR)/test.lock | grep '^[-+][a-z]' >&2; exit 1; }

# The whole suite on the newest versions pyproject.toml allows, in a scratch venv: what the
# next `make lock` would bring, tried before it is taken. Not part of `make test`.
DEPS_CHECK_DIR ?= build/deps-check
deps-check: $(STAMP) tools
	rm -rf $(DEPS_CHECK_DIR) && mkdir -p $(DEPS_CHECK_DIR)
	$(BIN)/uv pip compile pyproject.toml --quiet --extra test --upgrade --no-header \
		--python-version 3.11 -o $(DEPS_CHECK_DIR)/newest.txt
	@grep '^[a-z]' requirements/test.lock | cut -d' ' -f1 >$(DEPS_CHECK_DIR)/locked.txt; \
	echo "newer than requirements/test.lock:"; \
	grep '^[a-z]' $(DEPS_CHECK_DIR)/newest.txt | grep -vxFf $(DEPS_CHECK_DIR)/locked.txt || \
		echo "  nothing"
	$(PYTHON) -m venv $(DEPS_CHECK_DIR)/venv
	$(DEPS_CHECK_DIR)/venv/bin/python -m pip install --quiet -r $(DEPS_CHECK_DIR)/newest.txt
	$(DEPS_CHECK_DIR)/venv/bin/python -m pip install --quiet --no-deps -e .
	$(DEPS_CHECK_DIR)/venv/bin/pytest

# The native encoder under AddressSanitizer and UndefinedBehaviorSanitizer, built into its
# own folder (the installed streamer/_speedups stays as it is) and fuzzed against the
# pure-Python reference (tests/fuzz/encoder.py) with atheris. The object is linked without
# an ASan runtime: the one preloaded is atheris's (LLVM's), because gcc's own libasan would
# take the coverage hooks that guide libFuzzer (ASAN_RUNTIME="$$(gcc -print-file-name=libasan.so)"
# works too, unguided). UBSan reports through gcc's libubsan and aborts on the first error.
# CPython leaks by design (detect_leaks=0); PYTHONMALLOC=malloc lets ASan see every object.
# `make sanitize` is the short run of `make test` (the corpus in the repository is read, new
# finds go to build/); `make fuzz` runs FUZZ_SECONDS and grows tests/fuzz/corpus. A failing
# input is written to tests/fuzz/regressions/, which tests/test_fuzz.py replays (and which
# checks, with SANITIZE_SOURCE set to copies with a bug put in, that the run reports it).
SANITIZE_DIR ?= build/sanitize
SANITIZE_SOURCE ?= streamer/_speedups.c
SANITIZED := $(SANITIZE_DIR)/_speedups.so
FUZZ_ARTIFACTS ?= tests/fuzz/regressions/
SANITIZE_SECONDS ?= 20
FUZZ_SECONDS ?= 600
ASAN_RUNTIME ?= $$($(BIN)/python -c 'import atheris; print(atheris.path())')/asan_with_fuzzer.so
SANITIZER_ENV = LD_PRELOAD="$(ASAN_RUNTIME)" PYTHONMALLOC=malloc \
	ASAN_OPTIONS=detect_leaks=0:quarantine_size_mb=64:handle_sigill=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
FUZZ = $(SANITIZER_ENV) $(BIN)/python -m tests.fuzz.encoder --native $(SANITIZED) \
	-artifact_prefix=$(FUZZ_ARTIFACTS) -print_final_stats=1 -use_value_profile=1

$(SANITIZED): $(SANITIZE_SOURCE) $(STAMP)
	@command -v gcc >/dev/null && [ -e "$$(gcc -print-file-name=libubsan.so)" ] || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc >/dev/null; }
	mkdir -p $(SANITIZE_DIR)
	gcc -c -fPIC -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all \
		-fno-omit-frame-pointer -fsanitize-coverage=trace-cmp -Wall -Wextra \
		-I"$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
		$(SANITIZE_SOURCE) -o $(SANITIZE_DIR)/_speedups.o
	gcc -shared $(SANITIZE_DIR)/_speedups.o -lubsan -o $@

# libFuzzer's progress goes to a log; its end is shown, and all of it on a failure.
sanitize: $(SANITIZED)
	rm -rf $(SANITIZE_DIR)/corpus && mkdir -p $(SANITIZE_DIR)/corpus
	@echo "fuzzing the sanitized encoder for $(SANITIZE_SECONDS) s (log: $(SANITIZE_DIR)/fuzz.log)"
	@$(FUZZ) --seconds $(SANITIZE_SECONDS) $(SANITIZE_DIR)/corpus tests/fuzz/corpus \
		>$(SANITIZE_DIR)/fuzz.log 2>&1 && tail -n 6 $(SANITIZE_DIR)/fuzz.log || \
		{ cat $(SANITIZE_DIR)/fuzz.log; exit 1; }

fuzz: $(SANITIZED)
	$(FUZZ) --seconds $(FUZZ_SECONDS) tests/fuzz/corpus

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

# nginx is a baseline of the benchmark; installed here when missing (machines and CI are
# root). The harness runs it itself, on a loopback port, with its own prefix.
bench: $(BENCH_STAMP) $(AZURITE)
	command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light; }
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.pages --json bench/results/pages.json
	$(BIN)/python -m bench.azure
	$(BIN)/python -m bench.loop
	$(BIN)/python -m bench.memory
	$(BIN)/python -m bench.follow --store local
	$(BIN)/python -m bench.follow --store s3

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
