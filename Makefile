# The two set-up commands of README.md: `make serve` (the main job) and `make test` (the tests).
# Both create .venv on first use and install what they need into it; nothing is installed globally
# except, for the tests, Debian's PostgreSQL server when it is missing and we are root.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TRITON := $(VENV)/triton

.PHONY: install serve test lint bench

# NVIDIA's tritonserver (from the nvidia-pytriton wheel) for the Triton tests and benchmark, in a venv of
# its own; TIFFIN_TRITONSERVER points tiffin at it.
$(TRITON)/tiffin-triton.json: $(STAMP)
	$(BIN)/tiffin triton install --path $(TRITON) >/dev/null

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e '.[test,ray]'
	# Azure's inference server (for @rawhttp scripts) pins packages that clash with BentoML's: the
	# tests give only the replica that needs it this copy of its API modules.
	$(BIN)/python -m pip install -q --no-deps --upgrade --target $(VENV)/azmlinfsrv-api azureml-inference-server-http
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	TIFFIN_BIN=$(CURDIR)/$(BIN) bash examples/quickstart/run.sh

test: $(STAMP) $(TRITON)/tiffin-triton.json
	@bash tests/install-test-services.sh
	TIFFIN_TRITONSERVER=$(CURDIR)/$(TRITON) TIFFIN_REQUIRE_TRITON=1 $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check plugin runners tests benchmarks

bench: $(STAMP) $(TRITON)/tiffin-triton.json
	$(BIN)/python benchmarks/bench_replica.py
	$(BIN)/python benchmarks/bench_gateway.py
	$(BIN)/python benchmarks/bench_mlflow.py
	$(BIN)/python benchmarks/bench_batch.py
	TIFFIN_TRITONSERVER=$(CURDIR)/$(TRITON) $(BIN)/python benchmarks/bench_triton.py
