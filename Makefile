# Set-up and entry points. `make test` and `make demo` work on a fresh clone.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
ONMT_VERSION ?= 3.5.1
TEXTATTACK_VERSION ?= 0.3.11
TORCHATTACKS_VERSION ?= 3.5.1
PEERS_VENV ?= .venv-peers
PEERS_BIN := $(PEERS_VENV)/bin
# corpora folder (Multi30k, ...): NLPROBUST_DATA if set, else ../shared/data when present
NLPROBUST_DATA ?= $(shell [ -d ../shared/data ] && cd ../shared/data && pwd)
export NLPROBUST_DATA

.PHONY: install test test-all demo lint bench clean peers

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned (a range would pull a CUDA build of several GB)
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e ".[dev,onmt]"
	# OpenNMT-py pins torch<2.3 yet runs on newer torch: install it without its dependencies
	$(BIN)/pip install -q --no-deps OpenNMT-py==$(ONMT_VERSION)
	# torchattacks (AutoAttack components for robustness evaluation) requires torchvision, which it does not
	# import for the attacks used here and which has no build for every torch: install it without dependencies
	$(BIN)/pip install -q --no-deps torchattacks==$(TORCHATTACKS_VERSION)
	touch $@

install: $(BIN)/.installed

# Peer baselines (recipes/peer_textattack.py) in their own venv: TextAttack's tree does not fit the main one.
$(PEERS_BIN)/.installed: pyproject.toml
	$(PY) -m venv $(PEERS_VENV)
	$(PEERS_BIN)/pip install -q --upgrade pip
	$(PEERS_BIN)/pip install -q torch==$(TORCH_VERSION)
	# textattack imports flair at import time; the flair releases that install (0.14+) need transformers<5,
	# and without that pin pip backtracks to flair<=0.11, whose gensim 3.8 sdist does not build
	$(PEERS_BIN)/pip install -q -e ".[dev,peers,onmt]" torch==$(TORCH_VERSION) textattack==$(TEXTATTACK_VERSION) \
		"transformers<5"
	$(PEERS_BIN)/pip install -q --no-deps OpenNMT-py==$(ONMT_VERSION)
	touch $@

peers: $(PEERS_BIN)/.installed

test: install
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m "slow or not slow"

demo: install
	$(BIN)/nlprobust demo

lint: install
	$(BIN)/ruff check nlprobust negotiation recipes tests
	$(BIN)/mypy nlprobust negotiation

bench: install
	$(BIN)/python recipes/bench_seq2sick.py

clean:
	rm -rf $(VENV) runs/demo
