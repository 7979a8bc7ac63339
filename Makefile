# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Extras of setup.py installed into the venv and pinned in constraints.txt.
EXTRAS ?= test,export
DEMO_DIR ?= data/demo
DEMO_OUT ?= output/demo

.PHONY: test test-fast demo venv constraints clean-venv

venv: $(VENV)/.installed

# The versions of constraints.txt: the ones the tests passed with.
$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

# After changing setup.py's requirements: install them, then pin what is installed.
constraints: venv
	$(PY) scripts/freeze_constraints.py --extras $(EXTRAS) --output constraints.txt
	touch $(VENV)/.installed

# Two workers: the tests are mostly fresh processes of the entry commands (2-core machines).
test: venv
	$(PY) -m pytest -q -n 2 tests

test-fast: venv
	$(PY) -m pytest -q -n 2 -m "not slow" tests

demo: venv
	$(PY) scripts/demo.py --data-dir $(DEMO_DIR) --output $(DEMO_OUT)

clean-venv:
	rm -rf $(VENV)
