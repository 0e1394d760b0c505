# `make demo` and `make test` need nothing installed beforehand but python3 (3.10-3.12).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-unit lint lock clean

venv: $(STAMP)

# requirements-dev.lock: the runtime lock (requirements.lock, what the image installs) plus test/lint tools.
$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The seed scenario: a 4-trial ASHA search over learning rate and LoRA rank on a tiny T5 built from
# a config (no downloads), W&B offline, best adapter merged and verified. Each demo is its own
# experiment, runs/demo-<UTC time>, so it can be run again and again and never overwrites a run.
DEMO_EXPERIMENT ?= demo-$(shell date -u +%Y%m%dT%H%M%SZ)
demo: venv
	$(PY) -m jobs.tiny_models t5 --data examples/data/seed/train.jsonl --pretrain-on article --out models/tiny-t5
	$(VENV)/bin/qlora-launch tune examples/t5_tiny_summarize_local.yaml --experiment $(DEMO_EXPERIMENT)

test: venv
	$(PY) -m pytest -q -ra

test-unit: venv
	$(PY) -m pytest -q -ra tests/unit

# ruff (lint + format check) on everything; mypy on the shared core and the worker side (pyproject.toml).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Re-resolve the pins from requirements.in and requirements-dev.in (needs network), then write
# requirements.lock (runtime closure) and requirements-dev.lock (everything) from what is installed.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements-dev.in
	$(PY) scripts/lock.py

clean:
	rm -rf runs models wandb mlruns
