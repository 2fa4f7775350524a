# points-import — `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

.PHONY: install
install: $(STAMP) ## create .venv and install points-import with its dev tools

.PHONY: demo
demo: $(STAMP) ## import sample_data/ into the built-in Engage simulator
	$(BIN)/points-import demo

.PHONY: test
test: $(STAMP) ## run the test suite (unit and integration, the simulator on loopback)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); code=$$?; \
	if [ $$code -eq 5 ]; then echo "make test: no test ran" >&2; exit 1; fi; exit $$code

.PHONY: lint
lint: $(STAMP) ## ruff, mypy and the import contracts (lint-imports)
	$(BIN)/ruff check pipeline tests benchmarks sample_data
	$(BIN)/ruff format --check pipeline tests benchmarks sample_data
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

.PHONY: fmt
fmt: $(STAMP) ## format and fix what ruff can
	$(BIN)/ruff format pipeline tests benchmarks sample_data
	$(BIN)/ruff check --fix pipeline tests benchmarks sample_data

.PHONY: bench
bench: $(STAMP) ## benchmarks (outside the test suite)
	$(BIN)/python -m benchmarks

.PHONY: docker
docker: ## build the image
	docker build -t points-import .

.PHONY: clean
clean: ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-output
