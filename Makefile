# The course's two commands:  make lab  |  make test
# Both create .venv on first use (Python 3.11 + pip) and reuse it afterwards.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.bncourse-installed

.PHONY: lab test bench clean-venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt -e .
	touch $(STAMP)

## Open the course in JupyterLab on notebooks/.
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

## Run the unit tests and execute every notebook.
test: $(STAMP)
	$(BIN)/python -m pytest

## Measure the speed ratios (see benchmarks/README.md).
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean-venv:
	rm -rf $(VENV)
