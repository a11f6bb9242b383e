# Two commands do everything on a fresh machine (see README.md):
#   make demo   - set up .venv, train the VAE + autoencoder on the bundled digits, write runs/demo/
#   make test   - set up .venv with the test extras, run the test suite
#
# torch is installed on its own first, pinned to a CPU build that installs in seconds where a
# local wheel exists; an unpinned torch from the registry can be a multi-GB CUDA build.
# To use another build, install it into .venv yourself first (or set TORCH=...).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.pyro_lvm-installed
PYTEST_ARGS ?= -n 2 -q

.PHONY: demo test setup clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,plots]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/pyro-lvm demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
