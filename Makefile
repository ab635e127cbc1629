# Two entry points on a fresh machine (Python 3.11 + pip): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
EXTRAS ?= dev,serve,spark,fast,uplift

.PHONY: setup demo test test-fast lint bench clean

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

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/features_bench.py

clean:
	rm -rf $(VENV) propensity-workspace .pytest_cache
