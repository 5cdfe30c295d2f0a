# envoykit: every target creates .venv and installs what it needs from this repo's own files.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test bench lint fmt clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@$(BIN)/python -c "from google.protobuf.internal import api_implementation as a; \
	  assert a.Type() == 'upb', f'protobuf backend is {a.Type()}, expected upb'"
	@touch $(STAMP)

## demo: Envoy + envoykit sidecar + sample upstream on :10000 (ENVOYKIT_DEMO_PORT to change); Ctrl-C stops
demo: setup
	$(BIN)/envoykit demo

## test: lint, type-check, then the whole suite (unit + real-Envoy end-to-end)
test: setup lint
	$(BIN)/python -m pytest

## bench: throughput/latency through a real Envoy; writes bench/RESULTS.md (installs wrk/h2load if missing)
bench: setup
	.ci/system-packages --bench
	$(BIN)/python bench/run.py
	$(BIN)/python bench/ratelimit_rls.py --results bench/RESULTS.md
	$(BIN)/python bench/wasm_cost.py --results bench/RESULTS.md
	$(BIN)/python bench/transcoder.py --results bench/RESULTS.md

lint: setup
	$(BIN)/ruff check sdk filters tests bench docs
	$(BIN)/ruff format --check sdk filters tests bench docs
	$(BIN)/mypy

fmt: setup
	$(BIN)/ruff format sdk filters tests bench docs
	$(BIN)/ruff check --fix sdk filters tests bench docs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist bench/out bench/.venv-peer
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
