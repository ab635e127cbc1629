"""propensity: raw events -> point-in-time features -> rule and learned 0-5 scores.

The import namespace of the project. The repository's top-level folders install beneath it:
``features/`` is :mod:`propensity.features` (the lower layer: sources, validation, the feature
build), ``pipelines/`` is :mod:`propensity.pipelines` (rules, training, compare, explain, tune,
the service and the CLI) and ``configs/`` is :mod:`propensity.configs` (the shipped YAML, read as
package data). Nothing installs a top-level ``features`` or ``pipelines`` module: both names are
taken on PyPI and common as folders in a data-science project.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("propensity")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["Project", "__version__"]


def __getattr__(name: str):
    # ``propensity.Project`` without importing DuckDB and Ibis on ``import propensity`` (the CLI's
    # --version and --help stay fast)
    if name == "Project":
        from propensity.pipelines.project import Project

        return Project
    raise AttributeError(f"module 'propensity' has no attribute {name!r}")
