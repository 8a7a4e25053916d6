PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-embedded test-cluster lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/chatgate serve $(ARGS)

# The whole suite twice: the embedded backends (SQLite, in-memory limits), then the cluster
# backends (PostgreSQL at 127.0.0.1:5432, Redis at 127.0.0.1:6379; .ci/run starts them). Both
# passes always run and report on their own; the target fails if either fails.
# One pass alone: `make test-embedded` / `make test-cluster` (PYTEST_ARGS passes through).
test: $(STAMP)
	@failed=""; \
	for backend in embedded cluster; do \
	  echo "=== chatgate tests: $$backend pass ==="; \
	  start=$$(date +%s); \
	  CHATGATE_TEST_BACKEND=$$backend $(BIN)/python -m pytest $(PYTEST_ARGS) \
	    || failed="$$failed $$backend"; \
	  echo "=== $$backend pass done in $$(( $$(date +%s) - start )) s ==="; \
	done; \
	if [ -n "$$failed" ]; then echo "=== FAILED:$$failed pass(es) ==="; exit 1; fi; \
	echo "=== both passes passed ==="

test-embedded: $(STAMP)
	CHATGATE_TEST_BACKEND=embedded $(BIN)/python -m pytest $(PYTEST_ARGS)

test-cluster: $(STAMP)
	CHATGATE_TEST_BACKEND=cluster $(BIN)/python -m pytest $(PYTEST_ARGS)

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
