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

## demo: what the flow can do today, on real data: ingest the JUMP field and ExampleFly.
## (The simulated-screen demo with training, maps and the HTML report comes with issues #3 and #8.)
demo: setup
	$(MS) ingest --config $(MORPHOSCALE_CACHE)/jump-pilot-field/ingest.yaml --out runs/demo/jump-pilot-field.zarr --overwrite
	$(MS) ingest --config $(MORPHOSCALE_CACHE)/example-fly/ingest.yaml --out runs/demo/example-fly.zarr --overwrite
	$(PY) -m morphoscale.data.summary runs/demo/jump-pilot-field.zarr runs/demo/example-fly.zarr

## bench: the scripts behind BENCHMARKS.md
bench: setup
	$(PY) benchmarks/bench_ingest.py

clean:
	rm -rf $(VENV) .pytest_cache runs
