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
	$(PIP) -e '.[onnx,serve]'
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

# Speed against the ceilings of each precision and MONAI's BasicUNet, the memory of a training
# step, bf16 against fp32 training quality, then training to a time budget (train --minutes N
# against the fixed defaults and BasicUNet: 5 minutes on every set, 20 on ISBI 2012); each
# updates its section of BENCHMARKS.md. Not part of `make test`. About 2.5 hours on 2 cores.
bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/speed.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/accuracy.py --only-quality
	$(BIN)/python benchmarks/budget.py --minutes 5 --no-merge
	$(BIN)/python benchmarks/budget.py --minutes 20 --sets isbi2012

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
