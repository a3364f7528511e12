# phonemfa — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SANDBOX := asterisk/sandbox.sh
CONFIG ?= examples/sandbox.yaml
PYTEST_ARGS ?=
# The aioari peer of `make bench` runs from a venv of its own (aioari is never one of
# phonemfa's dependencies); `make test` makes it too, for the benchmark's smoke test.
PEER_VENV := bench/.venv-peer

.PHONY: help install test unit integration lint asterisk-up asterisk-down asterisk-restart \
        asterisk-cli asterisk-status run clean

help:
	@echo "make run            sandbox Asterisk + phonemfa in the foreground"
	@echo "make test           the whole suite (unit + integration on the sandbox Asterisk)"
	@echo "make unit           unit tests only (no Asterisk)"
	@echo "make install        venv in $(VENV) with the package and test/dev tools"
	@echo "make prompts        the shipped voice prompts (asterisk/sounds) from prompts/wordings.yaml"
	@echo "make lint           ruff on everything, mypy on src"
	@echo "make asterisk-up | asterisk-down | asterisk-restart | asterisk-status"
	@echo "make asterisk-cli [CMD='pjsip show endpoints']"

# The venv is rebuilt when pyproject.toml changes.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/pip || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }  # a failed first try left a half venv
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,dev]'
	touch $@

install: $(BIN)/.installed

test: install asterisk-up $(PEER_VENV)/.installed
	$(BIN)/pytest $(PYTEST_ARGS)

unit: install
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: install asterisk-up $(PEER_VENV)/.installed
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy src

# Shipped voice prompts (asterisk/sounds, not committed): remade only when the wordings or the
# code that speaks them change. PROMPTS_ARGS=--no-mbrola forces espeak-ng's own voices.
PROMPTS_SRC := prompts/wordings.yaml scripts/make_prompts.py src/phonemfa/prompts.py
PROMPTS_STAMP := asterisk/sounds/manifest.json
PROMPTS_ARGS ?=

.PHONY: prompts
prompts: $(PROMPTS_STAMP)

$(PROMPTS_STAMP): $(PROMPTS_SRC) | $(BIN)/.installed
	$(BIN)/python scripts/make_prompts.py --out asterisk/sounds $(PROMPTS_ARGS)

# The sandbox plays the shipped prompts: make them first (only remade when their sources change).
asterisk-up: prompts
	$(SANDBOX) up

asterisk-down:
	$(SANDBOX) down

asterisk-restart:
	$(SANDBOX) restart

asterisk-status:
	$(SANDBOX) status

asterisk-cli:
	$(SANDBOX) cli $(CMD)

# The sandbox and phonemfa in the foreground, with the sandbox's sample config (Ctrl-C stops
# phonemfa; `make asterisk-down` stops Asterisk).
run: install asterisk-up
	$(BIN)/phonemfa serve --config $(CONFIG)

# `make bench`: phonemfa against the machine's limit and two baselines (bench/README.md); the
# table on stdout, the JSON in bench/results/. It holds the sandbox lock for the whole run and
# starts (or reloads) the sandbox under it. BENCH_ARGS passes options, for example
# BENCH_ARGS='--scenarios burst --targets phonemfa,floor' or BENCH_ARGS=--json.
BENCH_ARGS ?=

$(PEER_VENV)/.installed: bench/requirements-peer.txt
	test -x $(PEER_VENV)/bin/pip || { rm -rf $(PEER_VENV) && $(PYTHON) -m venv $(PEER_VENV); }
	$(PEER_VENV)/bin/pip install -q -r bench/requirements-peer.txt
	touch $@

.PHONY: bench
bench: install prompts $(PEER_VENV)/.installed
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache var
	rm -rf asterisk/sounds/en asterisk/sounds/fr asterisk/sounds/manifest.json
