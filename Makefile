# The README's two commands: `make demo` and `make test`. Both install first (idempotent).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.heartsight-installed
LOCK := requirements.lock
# pip freeze names the CPU wheel torch==2.13.0+cpu; the lock says torch==2.13.0, which is what takes that wheel.
CPU_TORCH = sed -e 's/^torch==\([^+]*\)+.*$$/torch==\1/'

.PHONY: install lock check-lock demo test bench clean

install: $(STAMP)

# torch is pinned to the CPU wheel first so that no later requirement pulls a CUDA build; every package is held to
# the version in requirements.lock, so a fresh machine gets what the tests passed with.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(LOCK) torch==2.13.0
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[dev]'
	touch $(STAMP)

# Re-resolves pyproject.toml's requirements, newest allowed versions, in a throw-away venv and pins them in the lock.
lock:
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/pip" install --quiet --upgrade pip; \
	"$$tmp/venv/bin/pip" install --quiet torch==2.13.0; \
	"$$tmp/venv/bin/pip" install --quiet -e '.[dev]'; \
	{ echo '# The exact version of every package `make install` puts in .venv (pip install -c requirements.lock).'; \
	  echo '# Written by `make lock`: do not edit. torch==2.13.0 is the CPU wheel (pip freeze calls it 2.13.0+cpu).'; \
	  echo "# Resolved from pyproject.toml sha256 $$(sha256sum pyproject.toml | cut -d' ' -f1)"; \
	  "$$tmp/venv/bin/pip" freeze --exclude-editable | $(CPU_TORCH); } > "$$tmp/lock"; \
	mv "$$tmp/lock" $(LOCK)
	@echo "wrote $(LOCK); run make install to use it"

# CI, on a fresh .venv: every installed package is the one the lock pins (a requirement added to pyproject.toml
# without `make lock` would otherwise come in at whatever version is newest that day).
check-lock: install
	$(BIN)/pip freeze --exclude-editable | $(CPU_TORCH) > $(VENV)/installed.txt
	grep -v '^#' $(LOCK) | diff -u --label $(LOCK) --label .venv - $(VENV)/installed.txt || \
		{ echo ".venv is not what $(LOCK) pins: run make lock and commit $(LOCK)"; exit 1; }

demo: install
	$(BIN)/heartsight demo

# The import contracts in pyproject.toml first: the folders follow the data path, with no cycles.
test: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) build *.egg-info
