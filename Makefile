# Everything a fresh machine needs: a venv, the package (with its Cython extension) and the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml setup.py indicators/*.pyx indicators/*.pxd bridge/js/package-lock.json engine/js/package-lock.json 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: install run test bench clean

install: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@# The dashboard's Socket.IO browser client (socket.io-client, pinned in bridge/js/package-lock.json).
	@if command -v npm >/dev/null 2>&1; then (cd bridge/js && npm ci --no-audit --no-fund --loglevel=error) || echo "npm ci failed in bridge/js: the dashboard will say its Socket.IO client is missing"; \
	else echo "npm not found: the dashboard at / will say its Socket.IO client is missing (install Node.js, then make install)"; fi
	@# The README's Node.js bus bot (zeromq, @msgpack/msgpack, pinned in engine/js/package-lock.json).
	@if command -v npm >/dev/null 2>&1; then (cd engine/js && npm ci --no-audit --no-fund --loglevel=error) || echo "npm ci failed in engine/js: the Node.js bot test will fail"; fi
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
