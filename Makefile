# The two set-up commands of README.md: `make serve` (the main job) and `make test` (the tests).
# Both create .venv on first use and install what they need into it; nothing is installed globally
# except, for the tests, Debian's PostgreSQL server when it is missing and we are root. `make serve`
# installs only what serving needs: the test tools and Ray (most of a cold install's time) come with
# `make test`, on top.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-serve
TEST_STAMP := $(VENV)/.installed-test
TRITON := $(VENV)/triton

.PHONY: install serve test lint bench

# NVIDIA's tritonserver (from the nvidia-pytriton wheel) for the Triton tests and benchmark, in a venv of
# its own; TIFFIN_TRITONSERVER points tiffin at it.
$(TRITON)/tiffin-triton.json: $(TEST_STAMP)
	$(BIN)/tiffin triton install --path $(TRITON) >/dev/null

# tiffin itself, and scikit-learn, with which the examples train their models (examples/*/train.py).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e . 'scikit-learn>=1.3'
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,ray]'
	# Azure's inference server (for @rawhttp scripts) pins packages that clash with BentoML's: the
	# tests give only the replica that needs it this copy of its API modules.
	$(BIN)/python -m pip install -q --no-deps --upgrade --target $(VENV)/azmlinfsrv-api azureml-inference-server-http
	touch $(TEST_STAMP)

install: $(STAMP)

serve: $(STAMP)
	TIFFIN_BIN=$(CURDIR)/$(BIN) bash examples/quickstart/run.sh

test: $(TEST_STAMP) $(TRITON)/tiffin-triton.json
	@bash tests/install-test-services.sh
	TIFFIN_TRITONSERVER=$(CURDIR)/$(TRITON) TIFFIN_REQUIRE_TRITON=1 $(BIN)/python -m pytest

lint: $(TEST_STAMP)
	$(BIN)/ruff check plugin runners tests benchmarks

bench: $(TEST_STAMP) $(TRITON)/tiffin-triton.json
	$(BIN)/python benchmarks/bench_replica.py
	$(BIN)/python benchmarks/bench_gateway.py
	$(BIN)/python benchmarks/bench_mlflow.py
	$(BIN)/python benchmarks/bench_batch.py
	TIFFIN_TRITONSERVER=$(CURDIR)/$(TRITON) $(BIN)/python benchmarks/bench_triton.py
	$(BIN)/python benchmarks/bench_env.py
	$(BIN)/python benchmarks/bench_cli.py
	$(BIN)/python benchmarks/bench_idle.py
	$(BIN)/python benchmarks/bench_deploy.py
	$(BIN)/python benchmarks/bench_restart.py
