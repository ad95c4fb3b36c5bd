# The set-up contract: `make demo` and `make test` create the environment when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MS := $(VENV)/bin/morphoscale
export MORPHOSCALE_CACHE ?= $(HOME)/.cache/morphoscale

.PHONY: setup data test test-slow demo bench clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

## setup: the environment plus the real example data (JUMP field, ExampleFly, annotations)
setup: $(STAMP) data

data: $(STAMP)
	$(MS) datasets get all

## test: the fast suite (CI runs this); slow tests are in test-slow
test: setup
	$(PY) -m pytest -m "not slow" -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

test-slow: setup
	$(PY) -m pytest -m slow -q

## demo: the main job on built-in data
demo: setup
	$(MS) run configs/demo.yaml

## bench: the scripts behind BENCHMARKS.md
bench: setup
	$(PY) benchmarks/bench_ingest.py

clean:
	rm -rf $(VENV) .pytest_cache runs
