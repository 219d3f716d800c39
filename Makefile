# nkat-lightning: `make train` sets everything up and runs the default job; `make test` tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install data postgres train test test-fast lint clean gpu-wheels gpu-check

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip check
	touch $@

# The real Fashion-MNIST, offline, from Debian's package (the default job's data), and a C++
# compiler for the CPU kernel of the top-k/top-p attention filter (csrc/), built on first use.
data:
	@[ -f $(FASHION_MNIST) ] || { $(SUDO) apt-get update -qq && \
	  $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; }
	@command -v c++ >/dev/null || { $(SUDO) apt-get update -qq && \
	  $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++; }

# PostgreSQL, for the test of two sweep workers sharing one study (it skips without it).
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } || \
	  echo "PostgreSQL could not be installed: its test will be skipped"

train: install data
	$(BIN)/python -m nkat_lightning.train $(ARGS)

# Every test, the slow ones included, on every core (pytest-xdist), the 15 slowest named.
test: install data postgres
	$(BIN)/python -m pytest -q -n auto --durations=15

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# What an offline GPU host lacks (wheels for CPython 3.12, the Fashion-MNIST files), into
# git-ignored gpu/wheels and gpu/data, to carry with the checkout.
gpu-wheels: install data
	$(BIN)/python gpu/bundle.py

# On the GPU host (its own python3 with torch): GPU tests, throughput, the default job.
gpu-check:
	$(PYTHON) gpu/check.py $(ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks gpu

clean:
	rm -rf logs outputs multirun .pytest_cache .ruff_cache
