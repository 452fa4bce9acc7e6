# Two commands after `git clone`:  `make repro` (set up + run the pipeline)  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro test test-fast lint tiny clean-runs ui worker frontier seeds label

setup: $(VENV)/.installed

# torch first, pinned: the CPU build lies on local disk; an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	@echo "installing the pinned stack into $(VENV) (about 3 minutes) ..."
	@$(PY) -m pip install --quiet torch==2.13.0 > $(VENV)/install.log 2>&1 || (tail -30 $(VENV)/install.log; exit 1)
	@$(PY) -m pip install --quiet -e ".[test]" >> $(VENV)/install.log 2>&1 || (tail -30 $(VENV)/install.log; exit 1)
	@touch $@

# --relink: outputs become read-only hard links into DVC's cache (.dvc/config cache.type), not a second copy
repro: setup          ## the whole pipeline on the default params (rounds.count rounds)
	$(PY) -m flows.rounds sync
	dvc repro
	dvc checkout --relink

test: setup           ## the test suite (tiny model, real DVC/Prefect/MLflow, a headless browser)
	@.ci/ensure-browser
	$(PY) -m pytest

test-fast: setup      ## the unit tests alone (no pipeline runs, no servers): about half a minute
	$(PY) -m pytest -m "not slow" -p no:xdist -o addopts=""

lint: setup           ## ruff: lint + format check (what CI runs before the tests)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

HOST ?= 127.0.0.1
ui: setup             ## Prefect + MLflow servers on HOST (off loopback: RLHF_UI_AUTH=user:password); Ctrl-C stops
	$(PY) -m flows.ui --host $(HOST)

label: setup          ## the labeling page on 127.0.0.1:8765 over labels.db (python -m flows.label --help)
	$(PY) -m flows.label serve

POOL ?= cpu
worker: setup         ## a Prefect process worker for pool $(POOL) in this checkout (make worker POOL=gpu)
	@test -f .ui.env || test -n "$$PREFECT_API_URL" || (echo "error: start 'make ui' first or set PREFECT_API_URL"; exit 2)
	set -a; [ -f .ui.env ] && . ./.ui.env; set +a; \
	prefect work-pool inspect $(POOL) > /dev/null 2>&1 || prefect work-pool create $(POOL) --type process; \
	RLHF_PROJECT_DIR=$(CURDIR) prefect --no-prompt deploy -n pipeline-$(POOL) && RLHF_PROJECT_DIR=$(CURDIR) prefect worker start --pool $(POOL)

frontier: setup       ## the reward-KL sweep (params.yaml: frontier) and its plot
	$(PY) -m flows.frontier all

N ?= 3
seeds: setup          ## the policy stages under seeds 0..N-1 as DVC experiments, then their mean and interval
	$(PY) -m flows.seeds all --n $(N)

clean-runs:           ## forget local MLflow/Prefect state (not DVC outputs)
	rm -rf mlflow.db mlartifacts .prefect
