# Two entry points for a fresh machine (see README): `make run` and `make test`.
PYTHON ?= python3.11
TORCH  ?= torch==2.13.0
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: run test lint bench setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python 3.11) on PATH, or: make PYTHON=/path/to/python3.11 ..."; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q '$(TORCH)'
	$(PY) -m pip install -q -e '.[dev]'
	@echo "compiling the order-book kernels (numba, once; cached under bot/__pycache__)"
	$(PY) -c 'from bot.book import warm_up; print(f"  {warm_up():.1f} s")'
	touch $(STAMP)

run: $(STAMP)   ## the bot on the embedded default: the loopback exchange replaying recorded traffic
	$(PY) -m bot run --paper --sim $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: $(STAMP) lint   ## lint, type-check, then the whole test suite
	$(PY) -m pytest -q --durations=25 $(ARGS)   # the slowest tests listed: CI keeps to ~15 min

bench: $(STAMP)   ## ingest speed, then tick-to-intent latency (figures in the README)
	$(PY) bench/ingest.py
	$(PY) bench/intent_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
