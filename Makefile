# Every target creates .venv when it is missing and installs into it with constraints.txt
# (which pins the CPU build of torch). Re-installs only when pyproject.toml or
# constraints.txt change.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e '.[onnx]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e '.[onnx,geo,dev,serve]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PIP) -e '.[bench,dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/unetkit demo

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -m "not slow"

# Speed against the cores' peak and MONAI's BasicUNet, the memory of a training step, then
# accuracy on ISBI 2012 (20 min per network); each updates its section of BENCHMARKS.md.
# Not part of `make test`. MINUTES=5 for a shorter run.
MINUTES ?= 20
bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/speed.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/accuracy.py --minutes $(MINUTES)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
