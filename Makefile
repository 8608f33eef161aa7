# ragline: `make run` ingests the sample corpus and answers a query; `make test` runs the tests.
# Both create .venv and install everything pinned (constraints.txt) on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --disable-pip-version-check -c constraints.txt
STAMP  := $(VENV)/.installed

.PHONY: run test install test-fast bench bench-peers clean help

help:
	@echo "make run        ingest data/sample into the index 'sample' and answer a sample query"
	@echo "make test       run the whole test suite (unit + end-to-end with the real model)"
	@echo "make test-fast  unit tests only (no real model)"
	@echo "make bench      ingest benchmark on Python's HTML docs (needs python3.11-doc)"
	@echo "make bench-peers  ragline's chunkers vs LangChain/Chonkie/LlamaIndex on chunking-eval (peers in benchmarks/.venv-peers)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, at the local CPU wheel: any looser requirement pulls multi-GB CUDA builds.
# unstructured-inference without its deps: its timm/torchvision pull breaks torch imports.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test]'
	$(PIP) --no-deps unstructured-inference==1.6.14
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/ragline ingest data/sample --index sample
	$(BIN)/ragline query "How many days does a worker bee need to develop from egg to adult?" --index sample -k 3

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest_pydocs.py

# Peer chunkers live only in benchmarks/.venv-peers (pinned in benchmarks/requirements-peers.txt),
# never in ragline's dependencies. That venv sees the project venv through one .pth line, so
# ragline and its pinned stack are shared; -c constraints.txt keeps shared packages at our pins.
PEERS_VENV  := benchmarks/.venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed
$(PEERS_STAMP): benchmarks/requirements-peers.txt constraints.txt $(STAMP)
	$(PYTHON) -m venv $(PEERS_VENV)
	echo "import site; site.addsitedir('$$($(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")')" \
	  > "$$($(PEERS_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/_ragline_project_venv.pth"
	$(PEERS_VENV)/bin/pip install --disable-pip-version-check -c constraints.txt -r benchmarks/requirements-peers.txt
	touch $(PEERS_STAMP)

bench-peers: $(PEERS_STAMP)
	$(PEERS_VENV)/bin/python benchmarks/peer_chunkers.py $(BENCH_ARGS)

clean:
	rm -rf build indexes .ragline .pytest_cache
