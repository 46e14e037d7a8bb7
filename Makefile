# Two commands for a fresh machine:  `make demo`  and  `make test`.
# Both create (or reuse) .venv, install torch (CPU build without an NVIDIA GPU) and this project.
VENV    ?= .venv
PYTHON3 ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.sccl-installed
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1

.PHONY: setup demo mini test test-fast lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/install_torch.sh
	test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	PYTHON=$(PY) bash scripts/install_torch.sh
	$(PY) -m pip install --quiet -e ".[serve,test,cluster]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/sccl demo

# The real chain on the shared data (../shared/data): under 90 minutes on 2 CPU cores; runs/mini/report.md
mini: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash recipes/mini/run.sh

# Everything: lint, format check, unit and integration tests.
test: setup lint
	bash scripts/install_test_tools.sh
	$(PY) -m pytest -q

# Unit tests only (under 90 s on 2 cores).
test-fast: setup lint
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf runs
