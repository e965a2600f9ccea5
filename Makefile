# aviarytools: `make demo` shows the main job, `make test` installs and passes the tests.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: install compile test lint bench bench-scale bench-tools man demo faults clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	scripts/install-system-packages
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $@

# .pyc files, as a wheel install leaves them: the editable install has none, and where
# PYTHONDONTWRITEBYTECODE is set every command would compile each module it imports (0.04 s).
compile: install
	$(PY) -m compileall -q src/aviarytools

test: install compile man lint
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check src tests bench

bench: install compile bench-tools
	$(PY) bench/run.py

# The scale section alone: every command at N and 4N, growth flagged (bench/scale.py).
bench-scale: install compile
	$(PY) bench/scale.py

# rclone and the AWS CLI (own venv, .venv/tools/awscli): peers of the S3 rows only.
bench-tools: install
	PYTHON=$(PYTHON) scripts/install-bench-tools

man:
	scripts/check-man

demo: install compile
	scripts/demo

faults: install compile
	$(PY) tests/faults.py

clean:
	rm -rf $(VENV) build *.egg-info demo-output
