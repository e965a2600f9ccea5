# aviarytools: `make demo` shows the main job, `make test` installs and passes the tests.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: install test lint bench bench-tools man demo faults clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	scripts/install-system-packages
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $@

test: install man lint
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check src tests bench

bench: install bench-tools
	$(PY) bench/run.py

# rclone and the AWS CLI (own venv, .venv/tools/awscli): peers of the S3 rows only.
bench-tools: install
	PYTHON=$(PYTHON) scripts/install-bench-tools

man:
	scripts/check-man

demo: install
	scripts/demo

faults: install
	$(PY) tests/faults.py

clean:
	rm -rf $(VENV) build *.egg-info demo-output
