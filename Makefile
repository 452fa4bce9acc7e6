# Two commands after `git clone`:  `make repro` (set up + run the pipeline)  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro test tiny clean-runs

setup: $(VENV)/.installed

# torch first, pinned: the CPU build lies on local disk; an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	@echo "installing the pinned stack into $(VENV) (about 3 minutes) ..."
	@$(PY) -m pip install --quiet torch==2.13.0 > $(VENV)/install.log 2>&1 || (tail -30 $(VENV)/install.log; exit 1)
	@$(PY) -m pip install --quiet -e ".[test]" >> $(VENV)/install.log 2>&1 || (tail -30 $(VENV)/install.log; exit 1)
	@touch $@

repro: setup          ## the whole pipeline on the default params
	dvc repro

test: setup           ## the test suite (tiny model, real DVC/Prefect/MLflow)
	$(PY) -m pytest

clean-runs:           ## forget local MLflow/Prefect state (not DVC outputs)
	rm -rf mlflow.db mlartifacts .prefect
