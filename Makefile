# Two commands for a fresh machine:  `make demo`  and  `make test`.
# Both create (or reuse) .venv, install torch (CPU build without an NVIDIA GPU) and this project.
VENV    ?= .venv
PYTHON3 ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.sccl-installed
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1

.PHONY: setup demo mini test test-fast test-portable lint format clean

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

# The suite again under two other ways of rounding floats on this machine, as on another machine: torch's portable
# kernels and MKL without AVX (instead of AVX2), then one thread and another hash seed. A test that trains and then
# asserts must reach its property by construction or with a margin that rounding cannot cross (dev/LOG.md).
PORTABLE_1 := ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2
PORTABLE_2 := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONHASHSEED=1234
test-portable: setup
	bash scripts/install_test_tools.sh
	$(PORTABLE_1) $(PY) -m pytest -q
	$(PORTABLE_2) $(PY) -m pytest -q

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
