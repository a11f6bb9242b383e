# Two commands do everything on a fresh machine (see README.md):
#   make demo   - set up .venv, train the VAE + autoencoder on the bundled digits, write runs/demo/
#   make test   - set up .venv with every optional extra the tests exercise, run the test suite
#
# torch is installed on its own first, pinned to a CPU build that installs in seconds where a
# local wheel exists; an unpinned torch from the registry can be a multi-GB CUDA build.
# To use another build, install it into .venv yourself first (or set TORCH=...).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?= -n 2 -q

.PHONY: demo test docs setup clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"

# One stamp per set of extras: `make demo` stays light, `make test` adds what the tests use
# (music21 and gensim carry the offline corpora; mkdocs builds the docs site; tensorboard and
# mlflow are the tracking loggers' extras).
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[plots]"
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,plots,music,text,docs,tensorboard,mlflow]"
	touch $@

setup: $(VENV)/.installed-test

demo: $(VENV)/.installed-demo
	$(BIN)/pyro-lvm demo --out runs/demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

docs: $(VENV)/.installed-test
	bash scripts/build_docs.sh

clean:
	rm -rf $(VENV) runs site .pytest_cache .hypothesis
