"""The registered model as MLflow stores it: a pyfunc that carries its own code and exact requirements.

A model must load where the repository is not, and ``propensity`` is not on PyPI: so the model
carries a copy of the ``propensity`` package (MLflow ``code_paths``: MLflow puts ``code/`` on
``sys.path`` when it loads the model) and its ``requirements.txt`` pins, at the versions it was
trained with, only the third-party packages that loading and predicting import. An environment
rebuilt from the model (``mlflow models serve``, ``spark_udf(env_manager="virtualenv")``) installs
those and imports ``propensity`` from the copy. Tested in a fresh venv that has only those
requirements (tests/pipelines/training/test_pyfunc_portable.py).

This module imports only what the pyfunc needs at load time, so the pickled class does not drag
the trainer's dependencies (Optuna's search, SHAP, the CLI) into a serving environment.
"""

from __future__ import annotations

import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mlflow
import pandas as pd

from propensity.pipelines.training.scorer import load_scorer

__all__ = ["RUNTIME_PACKAGES", "PropensityPyfunc", "copy_package_code", "pip_requirements"]

# The distributions that ``load_scorer`` and ``predict`` import (the scorer, its booster, the
# calibrators, the model module's imports); checked by loading the model in a venv holding only these.
RUNTIME_PACKAGES = ("mlflow-skinny", "lightgbm", "scikit-learn", "scipy", "pandas", "numpy", "optuna", "pyyaml", "pydantic")

# What of the package a model needs: its Python modules and shipped data (configs, templates).
_PACKAGE_FOLDERS = ("features", "pipelines", "configs")
_PACKAGE_FILES = ("*.py", "*.yaml", "*.j2", "py.typed")


def pip_requirements() -> list[str]:
    """The runtime packages pinned to the versions this model was trained with."""
    pinned = []
    for name in RUNTIME_PACKAGES:
        try:
            pinned.append(f"{name}=={version(name)}")
        except PackageNotFoundError:  # not installed here: nothing to pin it to
            pinned.append(name)
    return pinned


def copy_package_code(destination: Path) -> Path:
    """Copy the running ``propensity`` package (source files and package data only) to
    ``destination/propensity``; returns that folder, to log as the model's ``code_paths``.

    The package root is the repository root in an editable install, so the copy walks the
    package's own folders rather than the whole root (which holds ``.venv``, tests, workspaces).
    """
    root = Path(__file__).resolve().parents[2]  # pipelines/training/pyfunc.py -> the package root
    target = destination / "propensity"
    target.mkdir(parents=True)
    for pattern in _PACKAGE_FILES:
        for file in root.glob(pattern):
            shutil.copy2(file, target / file.name)
    for folder in _PACKAGE_FOLDERS:
        for pattern in _PACKAGE_FILES:
            for file in (root / folder).rglob(pattern):
                if "__pycache__" in file.parts:
                    continue
                copy = target / file.relative_to(root)
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, copy)
    return target


class PropensityPyfunc(mlflow.pyfunc.PythonModel):
    """Pyfunc wrapper: input = the feature frame, output = ``probability`` and ``learned_score``.

    MLflow's own LightGBM flavour returns class labels for a classifier (STACK.md), so the
    scorer is wrapped instead.
    """

    def load_context(self, context) -> None:
        self.scorer = load_scorer(context.artifacts["scorer"])
        from propensity.pipelines.training.compiled import compiled_trees_requested

        if compiled_trees_requested():  # a pickled copy (Spark's workers) compiles again on first use
            self.scorer.compile_trees()

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.scorer.score(model_input).reset_index(drop=True)
