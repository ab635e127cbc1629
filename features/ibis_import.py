"""Ibis' DuckDB backend imported without its 19 other SQL compilers (issue 14: a cold process).

``ibis.backends.duckdb`` does ``import ibis.backends.sql.compilers``, whose ``__init__`` imports
every dialect's compiler (Athena, Trino, ClickHouse, ..., each with its sqlglot dialect): ~0.1-0.2 s
of CPU that every `explain` and `score` paid for the one compiler it uses. :func:`lazy_compilers`
puts that package in ``sys.modules`` as a module that imports a compiler when it is first asked
for (PEP 562 ``__getattr__``), so ``sc.duckdb``, ``from ibis.backends.sql.compilers import
PostgresCompiler`` and ``sc.postgres`` all still work; only the moment of the import changes.

It is done only when the package's ``__init__`` is what it was written against (a docstring,
``__all__`` and ``from ibis.backends.sql.compilers.<module> import <Name>`` lines, read with
``ast``, nothing executed); anything else, or the package already imported, leaves the import alone.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types

__all__ = ["lazy_compilers"]

PACKAGE = "ibis.backends.sql.compilers"


def lazy_compilers() -> bool:
    """Install the lazy package (idempotent); whether the compilers are now imported on demand."""
    current = sys.modules.get(PACKAGE)
    if current is not None:
        return bool(getattr(current, "_propensity_lazy", False))
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None or not spec.submodule_search_locations:
        return False
    try:
        with open(spec.origin, encoding="utf-8") as handle:
            names = _compiler_modules(handle.read())
    except (OSError, SyntaxError):
        return False
    if not names:
        return False
    module = types.ModuleType(PACKAGE)
    module.__spec__, module.__file__, module.__package__ = spec, spec.origin, PACKAGE
    module.__path__ = list(spec.submodule_search_locations)
    module.__all__ = sorted(names)
    module._propensity_lazy = True

    def __getattr__(name: str):
        if name in names:  # a compiler class: from its own module
            value = getattr(importlib.import_module(f"{PACKAGE}.{names[name]}"), name)
            setattr(module, name, value)
            return value
        if name.startswith("__"):
            raise AttributeError(name)
        try:  # a submodule, as ``sc.duckdb``
            return importlib.import_module(f"{PACKAGE}.{name}")
        except ModuleNotFoundError:
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}") from None

    module.__getattr__ = __getattr__
    sys.modules[PACKAGE] = module
    parent = sys.modules.get(PACKAGE.rpartition(".")[0])
    if parent is not None:
        parent.compilers = module
    return True


def _compiler_modules(source: str) -> dict[str, str]:
    """``{class name: submodule}`` when ``source`` only imports compilers (else empty)."""
    names: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE + ".") and node.level == 0:
            submodule = node.module[len(PACKAGE) + 1:]
            for alias in node.names:
                names[alias.asname or alias.name] = submodule
            continue
        return {}
    return names
