# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench bench-1m bench-profile clean

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "verifier needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/verifier serve

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check verifier tests bench wsgi.py
	$(BIN)/mypy verifier

# Benchmark (needs wrk: apt-get install -y wrk). BENCH_SESSIONS=1000000 for a bigger store;
# bench-1m seeds 100k and 1M side by side to show that the cost does not grow with N.
BENCH_SESSIONS ?= 100000
BENCH_ARGS ?=
bench: install
	$(BIN)/python bench/run.py --sessions $(BENCH_SESSIONS) $(BENCH_ARGS)

bench-1m: install
	$(BIN)/python bench/run.py --sessions 1000000 --compare 100000 $(BENCH_ARGS)

# Where one verification's CPU goes, in-process (one thread, no gunicorn, no wrk).
bench-profile: install
	$(BIN)/python bench/hotpath.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
