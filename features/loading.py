"""Moving validated rows into the workspace's tables, in SQL inside DuckDB.

Append-only with dedupe for events and outcomes (an anti-join on the key), an upsert for contacts
(a null never erases a stored value; a column's type widens when new values need it; every new or
changed contact gets a version in the attribute history, :mod:`propensity.features.history`), rejects
logged once per source, row and reason; each ingest is one transaction (:class:`transaction`).
:class:`propensity.features.store.Workspace` calls these; nothing here opens a file.
"""

from __future__ import annotations

import datetime as dt
import re

import duckdb
import pandas as pd
import pyarrow as pa

from propensity.features import history
from propensity.features.schema import REJECTS, ROW_NUMBER, Kind, schema_for
from propensity.features.sources import SourceError
from propensity.features.validate import normalize_frame, quote_ident

__all__ = ["Relation", "insert_rejects", "load_rows", "relation_name", "stream_error", "transaction",
           "upsert_contacts", "utc_now", "widen"]

Relation = str | pd.DataFrame | pa.Table | pa.RecordBatchReader
_NUMERIC = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE"}


class transaction:
    """BEGIN ... COMMIT, or ROLLBACK on any error: an ingest loads all of a source or nothing."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def __enter__(self) -> None:
        self.con.execute("BEGIN TRANSACTION")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.con.execute("COMMIT" if exc_type is None else "ROLLBACK")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def relation_name(con: duckdb.DuckDBPyConnection, relation: Relation) -> str:
    if isinstance(relation, str):
        return f"({relation})"
    if isinstance(relation, pd.DataFrame):
        relation = normalize_frame(relation)
        if ROW_NUMBER not in relation.columns:
            relation[ROW_NUMBER] = range(1, len(relation) + 1)
    con.register("__source", relation)
    return "__source"


def stream_error(source: str, exc: duckdb.InvalidInputException) -> SourceError | None:
    """A failure raised inside a streamed reader (e.g. a CSV parse error) as a SourceError.

    DuckDB reports it as its own error with the Python message inside; None for other errors.
    """
    text = str(exc)
    if "reading the stream" not in text:
        return None
    found = re.search(r"Invalid: (.*?)(?:\. Detail:|$)", text, flags=re.S)
    return SourceError(found.group(1).strip() if found else f"{source}: {text}")


def insert_rejects(con: duckdb.DuckDBPyConnection, select: str) -> pd.DataFrame:
    """Append rejects not already logged (same source, row and reason); return those added.

    Re-ingesting a file then leaves the rejects log as it was, like the tables.
    """
    fresh = con.execute(
        f"SELECT * FROM ({select}) r WHERE NOT EXISTS (SELECT 1 FROM {REJECTS.name} x "
        "WHERE x.kind = r.kind AND x.source = r.source AND x.row_number = r.row_number "
        "AND x.reason = r.reason AND x.raw IS NOT DISTINCT FROM r.raw)"
    ).df()
    fresh["rejected_at"] = utc_now()
    con.register("__fresh_rejects", fresh.astype({"row_number": "int64"}))
    con.execute(
        f"INSERT INTO {REJECTS.name} (kind, source, row_number, field, reason, raw, rejected_at) "
        "SELECT kind, source, row_number, field, reason, raw, rejected_at FROM __fresh_rejects"
    )
    con.unregister("__fresh_rejects")
    return fresh


def load_rows(con: duckdb.DuckDBPyConnection, kind: Kind, good: str) -> tuple[int, int]:
    """Append ``good`` rows to ``kind``; return (rows added, contacts updated)."""
    if kind == "contacts":
        return upsert_contacts(con, good)
    schema = schema_for(kind)
    cols = ", ".join(quote_ident(c) for c in schema.names)
    key = quote_ident(schema.key)
    # Anti-join in SQL: DuckDB hashes the keys, which stays fast and bounded for 10M+ rows.
    added = con.execute(
        f"INSERT INTO {schema.name} ({cols}) SELECT {cols} FROM {good} g "
        f"WHERE NOT EXISTS (SELECT 1 FROM {schema.name} t WHERE t.{key} = g.{key})"
    ).fetchall()[0][0]
    return int(added), 0


def widen(old: str, new: str) -> str:
    """Type that holds both an existing column's values and new ones."""
    if old == new:
        return old
    if old in _NUMERIC and new in _NUMERIC:
        return "DOUBLE" if "DOUBLE" in (old, new) or "FLOAT" in (old, new) else "BIGINT"
    return "VARCHAR"


def upsert_contacts(con: duckdb.DuckDBPyConnection, good: str) -> tuple[int, int]:
    """Insert new contacts; for known ones, non-null new values replace stored ones.

    A null never erases a stored value: sources are often partial (a Segment identify call
    carries only the traits it sets; a CRM export leaves unknown cells blank).
    """
    con.execute(f"CREATE OR REPLACE TEMP TABLE __new_contacts AS SELECT * FROM {good}")
    new_types = {r[0]: r[1] for r in con.execute("DESCRIBE __new_contacts").fetchall()}
    old_types = {r[0]: r[1] for r in con.execute("DESCRIBE contacts").fetchall()}
    for name, new_type in new_types.items():
        if name not in old_types:
            con.execute(f"ALTER TABLE contacts ADD COLUMN {quote_ident(name)} {new_type}")
            old_types[name] = new_type
        elif (wide := widen(old_types[name], new_type)) != old_types[name]:
            con.execute(f"ALTER TABLE contacts ALTER COLUMN {quote_ident(name)} TYPE {wide}")
            old_types[name] = wide
    attrs = [c for c in new_types if c != "contact_id"]

    def cast(c: str) -> str:
        return f"CAST(n.{quote_ident(c)} AS {old_types[c]})"

    changed = " OR ".join(
        f"({cast(c)} IS NOT NULL AND {cast(c)} IS DISTINCT FROM t.{quote_ident(c)})" for c in attrs
    ) or "false"
    now = utc_now()
    history.prepare(con, now)  # a pre-history workspace: its values so far become the first versions
    # the contacts this upsert adds or changes: each gets a new version in the attribute history
    updated_at = "CAST(n.updated_at AS TIMESTAMP)" if "updated_at" in new_types else "CAST(NULL AS TIMESTAMP)"
    valid_from = history.valid_from_sql(updated_at, "t.contact_id IS NULL", now)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE __touched AS SELECT n.contact_id, {valid_from} AS valid_from, "
        "t.contact_id IS NULL AS is_new FROM __new_contacts n LEFT JOIN contacts t ON t.contact_id = n.contact_id "
        f"WHERE t.contact_id IS NULL OR ({changed})"
    )
    added, updated = con.execute(
        "SELECT count(*) FILTER (WHERE is_new), count(*) FILTER (WHERE NOT is_new) FROM __touched"
    ).fetchall()[0]
    cols = ", ".join(quote_ident(c) for c in new_types)
    values = ", ".join(cast(c) for c in new_types)
    update = ", ".join(
        f"{quote_ident(c)} = coalesce({cast(c)}, t.{quote_ident(c)})" for c in attrs
    )
    matched = f"WHEN MATCHED AND ({changed}) THEN UPDATE SET {update} " if attrs else ""
    con.execute(
        f"MERGE INTO contacts t USING __new_contacts n ON t.contact_id = n.contact_id "
        f"{matched}WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values})"
    )
    history.record_versions(con, "__touched", now)
    con.execute("DROP TABLE __new_contacts")
    con.execute("DROP TABLE __touched")
    return int(added), int(updated)
