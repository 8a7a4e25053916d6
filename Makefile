PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/chatgate serve $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

LITELLM := bench/.venv-litellm/bin/litellm

$(LITELLM):
	$(PY) -m venv bench/.venv-litellm
	bench/.venv-litellm/bin/python -m pip install --quiet 'litellm[proxy]==1.108.7'

# one pinned run: direct, aiohttp floor, Chatgate, LiteLLM (BENCH_ARGS=--quick for 2 s cells)
bench: $(STAMP) $(LITELLM)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build dist
