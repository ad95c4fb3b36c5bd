# The set-up contract: `make demo` and `make test` create the environment when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MS := $(VENV)/bin/morphoscale
export MORPHOSCALE_CACHE ?= $(HOME)/.cache/morphoscale

.PHONY: setup data browser lint format test test-slow demo bench clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

## setup: the environment plus the real example data (JUMP field, ExampleFly, annotations),
## and Debian's chromium for the report's browser test (apt-get, when root or sudo allows it)
setup: $(STAMP) data browser

browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  (export DEBIAN_FRONTEND=noninteractive; $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium could not be installed: the report's browser test will be skipped"; }

data: $(STAMP)
	$(MS) datasets get all

## lint: ruff's checks and its formatting, as configured in pyproject.toml
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

## format: let ruff format the code and fix what it can
format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

## test: the lint, then the fast suite (CI runs this); slow tests are in test-slow
test: setup lint
	$(PY) -m pytest -m "not slow" -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

test-slow: setup
	$(PY) -m pytest -m slow -q

## demo: `morphoscale run configs/demo.yaml` on the built-in simulated screen (about 11 minutes on 2 cores):
## simulate -> ingest -> train the CPU MAE and the baselines -> embed -> map (TVN) -> bench -> runs/demo/report.html
demo: setup
	$(MS) run configs/demo.yaml --out runs/demo --quiet

## bench: the scripts behind BENCHMARKS.md
bench: setup
	$(PY) benchmarks/bench_ingest.py

clean:
	rm -rf $(VENV) .pytest_cache runs
