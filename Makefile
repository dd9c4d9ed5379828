# Everything a fresh machine needs: a venv, the package (with its Cython extension) and the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml setup.py indicators/*.pyx indicators/*.pxd 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: install run test bench clean

install: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

run: install
	$(BIN)/mt5-service

test: install
	$(BIN)/python -m pytest

# Benchmarks also need the peers they compare against (the `bench` extra).
bench: install
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	$(BIN)/python benchmarks/engine_throughput.py
	$(BIN)/python benchmarks/indicators_peers.py

clean:
	rm -rf $(VENV) build indicators/*.c indicators/*.so *.egg-info
