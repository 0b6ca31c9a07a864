# One command for the demo, one for the tests; everything else is set-up they need.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
LINTED  = metaflow_nomad metaflow_extensions tests benchmarks scripts examples

# Each set-up stage prints one line: its time, and whether it was cached.  Its whole
# output goes to $METAFLOW_NOMAD_CACHE/logs (default ~/.cache/metaflow-nomad/logs),
# and is shown when the stage fails.
STAGE = bash scripts/stage.sh

.PHONY: setup nomad docker browser demo test test-unit lint bench bench-quick

setup:
	@$(STAGE) venv bash scripts/setup_venv.sh $(PYTHON) $(VENV)

nomad:
	@$(STAGE) nomad bash scripts/get_nomad.sh

# Debian's docker.io + debootstrap, the cached offline Python 3.11 + Metaflow image rootfs,
# and Debian's docker-registry (the private registry of the production-shaped test cluster).
docker: setup
	@$(STAGE) docker-engine bash scripts/get_docker.sh engine
	@$(STAGE) docker-image bash scripts/get_docker.sh image
	@$(STAGE) registry bash scripts/get_docker.sh registry

# Debian's headless Chromium: the tests look at the nomad_usage card in a real browser.
browser:
	@$(STAGE) chromium bash scripts/get_chromium.sh

demo: setup nomad docker
	@$(PY) scripts/demo.py

test: setup nomad docker browser lint
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=15 tests

test-unit: setup
	$(PY) -m pytest -q -m "not integration" tests

lint: setup
	@$(STAGE) lint sh -c '$(VENV)/bin/ruff check $(LINTED) && $(VENV)/bin/ruff format --check $(LINTED)'

bench: setup nomad docker
	$(PY) benchmarks/run.py --wide

bench-quick: setup nomad
	$(PY) benchmarks/run.py --quick
