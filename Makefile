# Two entry points on a fresh machine (Python 3.11 + pip): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
EXTRAS ?= dev,serve,spark,fast,uplift,crm,postgres,btyd

.PHONY: setup demo test test-fast test-lowest lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip uv
	# uv resolves the pinned ranges from pyproject.toml about 10x faster than pip
	# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (as here), every process would compile
	# MLflow, scikit-learn and SHAP from source again (~10 s of a 19 s `propensity explain`)
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -e '.[$(EXTRAS)]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/propensity demo

# one pytest worker per core (2 on the reference machine); TEST_WORKERS=0 runs the suite in one process
TEST_WORKERS ?= 2
test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

# the suite on the oldest versions pyproject.toml allows (its lower bounds are what passed here);
# the [fast] extra is left out: at its lowest it cannot compile trees on this stack
LOWEST ?= .venv-lowest
test-lowest:
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet --upgrade pip uv
	$(LOWEST)/bin/uv pip install --quiet --compile-bytecode --python $(LOWEST)/bin/python --resolution lowest-direct -e '.[dev,serve]'
	$(LOWEST)/bin/python -m pytest -p no:cacheprovider \
	    --deselect tests/test_packaging.py::test_the_wheel_installed_in_a_fresh_venv_runs_its_defaults_from_an_empty_folder

bench: $(STAMP)
	$(PY) benchmarks/features_bench.py

clean:
	rm -rf $(VENV) $(LOWEST) propensity-workspace .pytest_cache
