# make demo · make test · make bench      (.ci/run calls `make test`)
# Each target creates .venv and installs the project on first use, so a fresh machine needs only Python 3.11.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# Tests and the demo never join a stale cluster or trip over a token file in ~/.ray (see README: Ray).
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
# numba caches track only the file of each jitted function, not the functions it calls in other modules:
# key the cache folder on the source of the whole library so an edit anywhere recompiles.
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache/$(shell cat $$(find trader -name "*.py" | sort) 2>/dev/null | sha1sum | cut -c1-12)
export PYTHONUNBUFFERED := 1

.PHONY: install demo test lint bench clean chromium

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: python3.11 not found; install Python 3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# The main job on the embedded defaults: a walk-forward backtest of the demo dataset on a local Ray cluster.
demo: $(STAMP)
	$(BIN)/trader data synth --config configs/demo.yaml
	$(BIN)/trader data ls --config configs/demo.yaml
	rm -rf runs/demo
	$(BIN)/trader backtest --config configs/base.yaml --config configs/demo.yaml --out runs/demo

lint: $(STAMP)
	$(BIN)/ruff check trader cluster jobs tests bench
	$(BIN)/ruff format --check trader cluster jobs tests bench

# The report test opens report.html in headless Chromium (Debian's `chromium`); install it when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (report browser test)"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  elif sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "warning: cannot install chromium (not root, no sudo); the browser test skips (fails under CI)" >&2; fi; }

test: $(STAMP) lint chromium
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/data.py
	$(BIN)/python bench/store.py
	$(BIN)/python bench/engine_kernel.py
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/bandit.py
	$(BIN)/python bench/walkforward.py --interval 1d --symbols 500 --cpus 1,2
	$(BIN)/python bench/execution.py
	$(BIN)/python bench/sweep.py
	$(BIN)/python bench/live.py --symbols 500 --days 1

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .numba_cache
