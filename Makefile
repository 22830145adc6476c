# chatlane: make install | check | test | bench | demo
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
WHEELS ?= $(HOME)/.cache/chatlane/wheels
STAMP  := $(VENV)/.installed

.PHONY: install check format test bench demo clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/build-llama-wheel.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	CHATLANE_WHEELS=$(WHEELS) scripts/build-llama-wheel.sh $(BIN)/python
	$(BIN)/python -m pip install --quiet --find-links $(WHEELS) -e '.[dev,local,llama,mcp,serve]' 'llama-cpp-python[server]==0.3.36'
	touch $(STAMP)

check: install
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m bench

demo: install
	$(BIN)/python -m chatlane demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
