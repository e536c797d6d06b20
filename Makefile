# The two set-up commands of README.md: `make serve` (the main job) and `make test` (the tests).
# Both create .venv on first use and install what they need into it; nothing is installed globally
# except, for the tests, Debian's PostgreSQL server when it is missing and we are root.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 5001

.PHONY: install serve test lint bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e '.[test]'
	# Azure's inference server (for @rawhttp scripts) pins packages that clash with BentoML's: the
	# tests give only the replica that needs it this copy of its API modules.
	$(BIN)/python -m pip install -q --no-deps --upgrade --target $(VENV)/azmlinfsrv-api azureml-inference-server-http
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/python examples/quickstart/train.py
	@echo
	@echo "Scoring URL: http://127.0.0.1:$(PORT)/score   (swagger: http://127.0.0.1:$(PORT)/swagger.json)"
	@echo "Try it:      curl -s http://127.0.0.1:$(PORT)/score -H 'Content-Type: application/json' -d @examples/quickstart/sample-request.json"
	@echo
	$(BIN)/tiffin replica serve -f examples/quickstart/blue-deployment.yml --port $(PORT)

test: $(STAMP)
	@bash tests/install-test-services.sh
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check plugin runners tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_replica.py
