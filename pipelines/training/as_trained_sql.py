"""A model's feature query compiled once per workspace and kept on disk (issue 14).

Ibis builds and compiles the feature query of a registered model (:func:`features_as_trained`,
~120 KB of SQL for the demo's 210 features) in ~1 s of CPU, most of a cold ``propensity explain``
of one contact, while DuckDB answers it in ~0.2 s. The SQL text depends on the code, the library
versions, what the model recorded (feature config, event types, rule inputs, expected purchases)
and the tables' schemas, never on their rows: the text compiled once serves every later spine of
that model, read back in a millisecond.

The key is a hash of all of those, so anything that could change the text gives a new entry
(the package's own source is hashed: an edited ``features/build.py`` compiles again). The spine is
the one table that differs between calls: the query is compiled against a spine *table* (a spine
expression is written to a temporary table first) and its name is stored as a placeholder. Only
DuckDB, and only a query whose tables are all in the database (no in-memory tables), is kept. A
missing or unreadable entry is compiled again; a folder that cannot be written is just not used.
Either way the query runs the way Ibis runs it (``con.sql(sql)``, Arrow, Ibis' own conversion to
the expression's schema), so the frame is the one :func:`features_frame` gives.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import ibis
import ibis.expr.operations as ops
import pandas as pd

from propensity.pipelines.training.as_trained import features_as_trained, features_frame

__all__ = ["KEEP_ENTRIES", "features_frame_as_trained", "query_key"]

SPINE_PLACEHOLDER = "__propensity_spine__"
KEEP_ENTRIES = 16  # newest entries kept per folder (a few models x a few code versions)
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def features_frame_as_trained(events: ibis.Table, spine: ibis.Table, scorer, contacts: ibis.Table | None = None,
                              contact_history: ibis.Table | None = None, *, folder: Path | None = None,
                              columns: Sequence[str] | None = None) -> pd.DataFrame:
    """``features_frame(features_as_trained(...))``, its SQL compiled once per key in ``folder``.

    ``columns``: only these feature columns (after ``contact_id, as_of``); DuckDB then skips the
    aggregates nothing reads. Without ``folder``, on another backend than DuckDB or with a table that
    is not in the database, the expression is compiled and run as ever.
    """
    def expression(spine: ibis.Table) -> ibis.Table:
        features = features_as_trained(events, spine, scorer, contacts, contact_history)
        return features if columns is None else features.select("contact_id", "as_of", *columns)

    backend = events.get_backend()
    tables = [t for t in (events, contacts, contact_history) if t is not None]
    if folder is None or backend.name != "duckdb" or not all(_stored(t) for t in tables):
        return features_frame(expression(spine))
    if not _stored(spine):  # a spine expression (contacts known at a cut-off): its rows, computed once
        spine = backend.create_table(f"_spine_{uuid.uuid4().hex[:12]}", spine, temp=True)
    key = query_key(scorer, events, spine, contacts, contact_history, columns)
    path = Path(folder) / f"{key}.json"
    entry = _read(path)
    if entry is None:
        expr = expression(spine)
        entry = _compile(backend, expr, spine)
        if entry is None:  # not a query that can be kept (an in-memory table in it)
            return features_frame(expr)
        _write(path, entry)
    sql = entry["sql"].replace(SPINE_PLACEHOLDER, spine.op().name)
    return _run(backend, sql, ibis.schema(entry["schema"]))


def query_key(scorer, events: ibis.Table, spine: ibis.Table, contacts: ibis.Table | None,
              contact_history: ibis.Table | None, columns: Sequence[str] | None = None) -> str:
    """The hash of everything the compiled text depends on (the spine by its schema, not its name)."""
    def table(t: ibis.Table | None, *, named: bool = True):
        if t is None:
            return None
        return {"name": t.op().name if named else None, "schema": {k: str(v) for k, v in t.schema().items()}}

    parts = {
        "code": _code_digest(),
        "versions": [ibis.__version__, _version("sqlglot"), _version("duckdb"), _version("pyarrow")],
        "model": {"feature_config": getattr(scorer, "feature_config", None),
                  "event_types": list(getattr(scorer, "event_types", ())),
                  "rule_inputs": getattr(scorer, "rule_inputs", None),
                  "expected_purchases": getattr(scorer, "expected_purchases", None)},
        "tables": [table(events), table(spine, named=False), table(contacts), table(contact_history)],
        "columns": None if columns is None else list(columns),
    }
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@cache
def _code_digest() -> str:
    """The package's Python source (features/ and pipelines/), hashed: ~10 ms for ~180 files."""
    digest = hashlib.sha256()
    for folder in ("features", "pipelines"):
        for path in sorted((_PACKAGE_ROOT / folder).rglob("*.py")):
            digest.update(path.relative_to(_PACKAGE_ROOT).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _version(module: str) -> str:
    import importlib

    return str(getattr(importlib.import_module(module), "__version__", "?"))


def _stored(table: ibis.Table) -> bool:
    return isinstance(table.op(), ops.DatabaseTable)


def _compile(backend, expr: ibis.Table, spine: ibis.Table) -> dict | None:
    if expr.op().find(ops.InMemoryTable):
        return None
    sql = backend.compile(expr.as_table())
    name = spine.op().name
    if name not in sql or SPINE_PLACEHOLDER in sql:
        return None
    schema = {k: str(v) for k, v in expr.schema().items()}
    if ibis.schema(schema) != expr.schema():  # the types must read back as they were
        return None
    return {"sql": sql.replace(name, SPINE_PLACEHOLDER), "schema": schema}


def _run(backend, sql: str, schema) -> pd.DataFrame:
    """What Ibis' DuckDB ``to_pyarrow`` does with the compiled text, then Arrow's pandas conversion."""
    from ibis.backends.duckdb.converter import DuckDBPyArrowData

    table = backend.con.sql(sql).to_arrow_table()
    return DuckDBPyArrowData.convert_table(table, schema).to_pandas()


def _read(path: Path) -> dict | None:
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("sql"), str) or not isinstance(entry.get("schema"), dict):
        return None
    return entry


def _write(path: Path, entry: dict) -> None:
    """Atomically (another process may read it meanwhile); the oldest entries beyond KEEP_ENTRIES go."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(entry))
        os.replace(partial, path)
        entries = sorted(path.parent.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[KEEP_ENTRIES:]:
            old.unlink(missing_ok=True)
    except OSError:
        pass  # a folder that cannot be written: compiled again next time, nothing else changes
