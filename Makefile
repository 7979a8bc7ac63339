# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= data/demo
DEMO_OUT ?= output/demo

.PHONY: test test-fast demo venv clean-venv

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test,export]'
	touch $@

test: venv
	$(PY) -m pytest -q tests

test-fast: venv
	$(PY) -m pytest -q -m "not slow" tests

demo: venv
	$(PY) scripts/demo.py --data-dir $(DEMO_DIR) --output $(DEMO_OUT)

clean-venv:
	rm -rf $(VENV)
