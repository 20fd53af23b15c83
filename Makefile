# The course's two commands:  make lab  |  make test
# Both create .venv on first use (Python 3.12 or 3.11, whichever is found first, + pip) and reuse it
# afterwards. PYTHON=/path/to/python3.11 chooses the interpreter.

# The Python versions the course supports, in the order make looks for them.
SUPPORTED := 3.12 3.11
# The interpreter of Python $(1) that runs: python$(1) on PATH, else one installed by pyenv (whose
# shim does not run a version that is not activated).
find_python = $(firstword $(foreach c,python$(1) $(wildcard $(or $(PYENV_ROOT),$(HOME)/.pyenv)/versions/$(1).*/bin/python$(1)),\
	$(shell $(c) -c 'import sys; print(sys.executable)' 2>/dev/null)))
PYTHON ?= $(firstword $(foreach v,$(SUPPORTED),$(call find_python,$(v))))
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.bncourse-installed

# The other supported Python (the unit tests run on it too: make test-other).
PYTHON_VERSION = $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
OTHER_PYTHON  ?= $(firstword $(foreach v,$(filter-out $(PYTHON_VERSION),$(SUPPORTED)),$(call find_python,$(v))))
OTHER_VENV    ?= .venv-other

GET_PYTHON := The course supports Python 3.12 and 3.11: install one from python.org, your package manager \
(apt install python3.12-venv, brew install python@3.12) or pyenv, or name it with make PYTHON=/path/to/python3.12.

.PHONY: lab test chromium test-other platforms bench notebooks clean-venv

# A venv in $(1) made with the interpreter $(2), with the pins, the test tools and bncourse installed.
define make_venv
	@test -x $(1)/bin/python || test -n "$(2)" || { echo "Found neither python3.12 nor python3.11. $(GET_PYTHON)" >&2; exit 1; }
	@test -x $(1)/bin/python || $(2) -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))' \
		|| { echo "$(2) is $$($(2) -V 2>&1). $(GET_PYTHON)" >&2; exit 1; }
	test -x $(1)/bin/python || $(2) -m venv $(1)
	$(1)/bin/python -m pip install -r requirements.txt -r requirements-dev.txt -e .
	touch $(1)/.bncourse-installed
endef

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(call make_venv,$(VENV),$(PYTHON))

$(OTHER_VENV)/.bncourse-installed: requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(OTHER_VENV)/bin/python || test -n "$(OTHER_PYTHON)" || { echo "make test-other needs the other \
	supported Python beside $(PYTHON) ($(SUPPORTED)): install it, or name it with OTHER_PYTHON=/path/to/python" >&2; exit 1; }
	$(call make_venv,$(OTHER_VENV),$(OTHER_PYTHON))

# JupyterLab refuses to run as root (containers) unless told it may.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)
# The course's JupyterLab set-up (no news question, no update checks; ~/.jupyter is left alone).
LAB_CONFIG := jupyter/jupyter_lab_config.py

## Open the course in JupyterLab on notebooks/.
lab: $(STAMP)
	$(BIN)/jupyter lab --config=$(LAB_CONFIG) $(ALLOW_ROOT) notebooks/

## Run the unit tests, execute every notebook, and run the course in a browser (tests/test_browser.py).
test: $(STAMP) chromium
	$(BIN)/python -m pytest

## Install Chromium for the browser test where it is missing and apt-get can install it.
chromium:
	@sh tests/browser/install_chromium.sh

## Run the unit tests (tests/, not the notebooks) on the other supported Python, in $(OTHER_VENV).
test-other: $(OTHER_VENV)/.bncourse-installed
	$(OTHER_VENV)/bin/python -m pytest tests

## Resolve requirements.txt for every supported platform and Python (reads the package index).
platforms: $(STAMP)
	BNCOURSE_PLATFORMS=1 $(BIN)/python -m pytest tests/test_platforms.py

## Execute notebooks as they are committed: learner mode, top to bottom, source hashes recorded, timings
## stripped (tests/test_freshness.py checks all three). NB="04 06" picks notebooks; default every one.
notebooks: $(STAMP)
	$(BIN)/python tools/notebooks.py $(NB)

## Measure the speed ratios (see benchmarks/README.md).
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean-venv:
	rm -rf $(VENV) $(OTHER_VENV)
