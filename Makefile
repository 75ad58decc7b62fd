# Set-up and entry points. `make test` and `make demo` work on a fresh clone.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
ONMT_VERSION ?= 3.5.1
# corpora folder (Multi30k, ...): NLPROBUST_DATA if set, else ../shared/data when present
NLPROBUST_DATA ?= $(shell [ -d ../shared/data ] && cd ../shared/data && pwd)
export NLPROBUST_DATA

.PHONY: install test test-all demo lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned (a range would pull a CUDA build of several GB)
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e ".[dev,onmt]"
	# OpenNMT-py pins torch<2.3 yet runs on newer torch: install it without its dependencies
	$(BIN)/pip install -q --no-deps OpenNMT-py==$(ONMT_VERSION)
	touch $@

install: $(BIN)/.installed

test: install
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m "slow or not slow"

demo: install
	$(BIN)/nlprobust demo

lint: install
	$(BIN)/ruff check nlprobust negotiation recipes tests

bench: install
	$(BIN)/python recipes/bench_seq2sick.py

clean:
	rm -rf $(VENV) runs/demo
