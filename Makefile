# Two commands for a fresh machine:  `make demo`  and  `make test`.
# Both create (or reuse) .venv, install torch (CPU build without an NVIDIA GPU) and this project.
VENV    ?= .venv
PYTHON3 ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.sccl-installed

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/install_torch.sh
	test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	PYTHON=$(PY) bash scripts/install_torch.sh
	$(PY) -m pip install --quiet -e ".[serve,test]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/sccl demo --output-dir runs/demo

test: setup
	bash scripts/install_test_tools.sh
	$(PY) -m pytest -q

clean:
	rm -rf runs
