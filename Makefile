# One command for the demo, one for the tests; everything else is set-up they need.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: setup nomad docker demo test test-unit lint bench bench-quick

$(VENV)/.installed: setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

setup: $(VENV)/.installed

nomad:
	bash scripts/get_nomad.sh >/dev/null

# Debian's docker.io + debootstrap, the cached offline Python 3.11 + Metaflow image rootfs,
# and Debian's docker-registry (the private registry of the production-shaped test cluster).
docker: setup
	bash scripts/get_docker.sh engine >/dev/null && bash scripts/get_docker.sh image >/dev/null
	bash scripts/get_docker.sh registry >/dev/null

demo: setup nomad docker
	$(PY) scripts/demo.py

test: setup nomad docker lint
	$(PY) -m pytest -q -p no:cacheprovider --durations=15 tests

test-unit: setup
	$(PY) -m pytest -q -m "not integration" tests

lint: setup
	$(VENV)/bin/ruff check metaflow_nomad metaflow_extensions tests benchmarks scripts examples
	$(VENV)/bin/ruff format --check metaflow_nomad metaflow_extensions tests benchmarks scripts examples

bench: setup nomad docker
	$(PY) benchmarks/run.py --wide

bench-quick: setup nomad
	$(PY) benchmarks/run.py --quick
