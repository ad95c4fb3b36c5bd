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

## demo: the flow, verb by verb, on the built-in simulated screen (about 6 minutes on 2 cores):
## simulate -> ingest -> train a CPU MAE -> embed -> map (TVN) -> bench, beside the oracle map (the ceiling).
## (`morphoscale run` with one config and the HTML report come with issue #8.)
DEMO := runs/demo
demo: setup
	$(MS) simulate --preset demo --seed 0 --out $(DEMO)/screen --overwrite --quiet
	$(MS) ingest --format rxrx --source $(DEMO)/screen --out $(DEMO)/screen.zarr --overwrite --quiet
	$(MS) train --store $(DEMO)/screen.zarr --out $(DEMO)/mae --config configs/demo_mae.yaml --overwrite --quiet
	$(MS) embed --checkpoint $(DEMO)/mae/model.ckpt --store $(DEMO)/screen.zarr --out $(DEMO)/mae.h5ad --overwrite --quiet
	$(MS) map --embeddings $(DEMO)/mae.h5ad --align tvn --out $(DEMO)/mae-map.h5ad --overwrite
	$(MS) bench --map $(DEMO)/mae-map.h5ad --compound-targets $(DEMO)/screen/ground_truth/compound_targets.csv --out $(DEMO)/mae-bench --overwrite
	$(PY) -c "from morphoscale.simulate.validate import oracle_embeddings; oracle_embeddings('$(DEMO)/screen').write_h5ad('$(DEMO)/oracle.h5ad')"
	$(MS) map --embeddings $(DEMO)/oracle.h5ad --align tvn --out $(DEMO)/oracle-map.h5ad --overwrite
	$(MS) bench --map $(DEMO)/oracle-map.h5ad --compound-targets $(DEMO)/screen/ground_truth/compound_targets.csv --out $(DEMO)/oracle-bench --overwrite

## bench: the scripts behind BENCHMARKS.md
bench: setup
	$(PY) benchmarks/bench_ingest.py

clean:
	rm -rf $(VENV) .pytest_cache runs
