# aviarytools: `make demo` shows the main job, `make test` installs and passes the tests.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: install test bench man demo faults clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	scripts/install-system-packages
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $@

test: install man
	$(PY) -m pytest -q

bench: install
	$(PY) bench/run.py

man:
	scripts/check-man

demo: install
	scripts/demo

faults: install
	$(PY) tests/faults.py

clean:
	rm -rf $(VENV) build *.egg-info demo-output
