# Two commands: `make run` (the service on 127.0.0.1:3002) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench clean lock

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/waservice $(if $(wildcard config.toml),--config config.toml)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff format --check waservice tests bench
	$(BIN)/ruff check waservice tests bench

format: $(STAMP)
	$(BIN)/ruff format waservice tests bench
	$(BIN)/ruff check --fix waservice tests bench

bench: $(STAMP)
	$(BIN)/python bench/api.py

# Re-pin every dependency after changing pyproject.toml.
lock:
	rm -rf /tmp/waservice-lock && $(PYTHON) -m venv /tmp/waservice-lock
	/tmp/waservice-lock/bin/pip install -q -e '.[test]'
	/tmp/waservice-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV)
