# The README's two set-up commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON_BOOT ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-lisa test lint venv clean eval-tables

venv: $(STAMP)

INTERFACES := $(wildcard msg/*.msg srv/*.srv) osprey_interfaces/CMakeLists.txt osprey_interfaces/pyproject.toml

$(STAMP): requirements.txt requirements-dev.txt setup.py $(INTERFACES)
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --force-reinstall --no-deps ./osprey_interfaces
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST $(VENV)/bin/osprey-demo --frames 5

# the tiny LISA answers ~/reason_segment on the synthetic camera; Osprey describes each mask
demo-lisa: $(STAMP)
	ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST $(VENV)/bin/osprey-reason-demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST $(PY) -m pytest

# every evaluation protocol on the shapes world → training/evaluation/results/
eval-tables: $(STAMP)
	$(PY) -m training.evaluation.shapes_tables

clean:
	rm -rf $(VENV) .cache build *.egg-info
