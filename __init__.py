"""propensity: raw events -> point-in-time features -> rule and learned 0-5 scores.

The import namespace of the project. The repository's top-level folders install beneath it:
``features/`` is :mod:`propensity.features` (the lower layer: sources, validation, the feature
build), ``pipelines/`` is :mod:`propensity.pipelines` (rules, training, compare, explain, tune,
the service and the CLI) and ``configs/`` is :mod:`propensity.configs` (the shipped YAML, read as
package data). Nothing installs a top-level ``features`` or ``pipelines`` module: both names are
taken on PyPI and common as folders in a data-science project.
"""

from __future__ import annotations

__all__ = ["Project", "__version__"]


def __getattr__(name: str):
    # ``propensity.Project`` without importing DuckDB and Ibis on ``import propensity`` (the CLI's
    # --version and --help stay fast), and ``__version__`` read from the installed metadata only
    # when asked for (importlib.metadata and the email parser it needs: ~0.1 s of every command)
    if name == "Project":
        from propensity.pipelines.project import Project

        return Project
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("propensity")
        except PackageNotFoundError:  # imported from a source tree that was never installed
            value = "0+unknown"
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module 'propensity' has no attribute {name!r}")
