"""Raw rows -> good rows in canonical dtypes + rejected rows with a reason.

The rules are written once, as DuckDB SQL built by pure functions, so that the same checks
serve a small pandas frame (:func:`validate`, run in an in-memory DuckDB) and a 10-million-row
Parquet file or dataset query (:func:`stage_rows` on the workspace connection, which never
brings the rows into Python).

A file is refused as a whole (:class:`DataValidationError`) only when a required column is
missing. Every other problem rejects one row, with a message naming the file, the 1-based data
row and the field, e.g. ``events.csv row 17, field 'ts': cannot parse 'yesterday' as a
timestamp``; the other rows load.

Parsing rules
-------------
- ids: one rule for every format (:func:`normalize_id` is the same rule for one value, used
  by the service). Text is trimmed; empty, ``null``, ``none`` and ``nan`` (any case) count as
  missing; an integral number loses its fraction whether it is a float (Parquet ``11391.0``,
  JSON ``123.0``) or text (CSV ``"11391.0"``, ``"11391."``): all become ``"11391"``. Anything
  else stays as written (``"11391.5"``, ``"1e3"``, ``"007"``); a float that is not integral
  is written as its shortest repr (``11391.5``).
- timestamps: ISO 8601 text with or without an offset (converted to UTC, offset dropped; no
  offset means UTC), a date (midnight UTC), epoch seconds or milliseconds (numbers or numeric
  text; ``abs(x) >= 1e11`` is read as milliseconds), or typed timestamps. Kept when
  ``1970-01-01 <= ts <= now + 1 day``. A bare number is always epoch time: a compact date
  such as ``20240101`` must be written ``2024-01-01``.
- value: a finite number; missing -> the column default (1.0 for events, NULL for outcomes).
- properties: a JSON object (text, or a struct/map column); missing -> NULL. Stored as given;
  the row hash reads it through :func:`canonical_json`, so key order and spacing do not matter.

Row hashes
----------
Events and outcomes without an id get ``md5`` of their columns (``schema.hash_of``). Identical
rows inside one source are distinct events (two same-day purchases of the same item): the n-th
copy (n >= 2, in source order) gets ``md5(<row hash> || '|' || n)``. Re-ingesting the same source
gives the same ids, so it adds nothing; :attr:`StagedRows.identical` counts the copies.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd

from propensity.features.column_plan import (
    ColumnPlan,
    DataValidationError,
    MissingColumnsError,
    plan_columns,
    type_class,
)
from propensity.features.column_sql import BUILDERS, checks_for
from propensity.features.schema import (
    ROW_NUMBER,
    SOURCE_ERROR,
    SOURCE_TEXT,
    Kind,
    TableSchema,
    schema_for,
)
from propensity.features.values import (
    CANONICAL_JSON_SQL,
    MISSING_ID,
    MISSING_TEXT,
    canonical_json,
    normalize_id,
    normalize_now,
    quote_ident,
    quote_literal,
)
from propensity.features.values import register_functions as _register_functions

__all__ = [
    "ColumnPlan",
    "DataValidationError",
    "MissingColumnsError",
    "StagedRows",
    "ValidationResult",
    "canonical_json",
    "good_rows_sql",
    "normalize_id",
    "normalize_frame",
    "normalize_now",
    "plan_columns",
    "quote_ident",
    "quote_literal",
    "rejects_sql",
    "stage_rows",
    "validate",
]

_MISSING_TEXT, _MISSING_ID = MISSING_TEXT, MISSING_ID
_REJECT_COLUMNS = ["kind", "source", "row_number", "field", "reason", "raw"]
_CANONICAL_JSON_SQL = CANONICAL_JSON_SQL


# --------------------------------------------------------------------------- SQL per column


# (the SQL of each column: propensity.features.column_sql)


# --------------------------------------------------------------------------- staging


@dataclass(frozen=True)
class StagedRows:
    """Rows of one source parsed and checked into a temporary DuckDB table.

    Parameters
    ----------
    table : str
        Name of the temporary table (columns: the output columns, ``__row_number``,
        ``__field``, ``__reason``, ``__raw``).
    kind : Kind
        Target table.
    source : str
        Name of the source.
    columns : tuple of str
        Output columns, in order: canonical ones, then attributes (contacts).
    casts : dict
        Attribute column -> type it is cast to when loaded (types inferred from text).
    read, rejected, good, distinct : int
        Rows read, rows rejected, rows passing the checks, distinct keys among those.
    identical : int
        Events/outcomes without an id: copies of an identical earlier row of the source, kept
        as distinct events (their keys carry the occurrence number).
    """

    table: str
    kind: Kind
    source: str
    columns: tuple[str, ...]
    casts: dict[str, str]
    read: int
    rejected: int
    good: int
    distinct: int
    identical: int = 0

    @property
    def duplicates(self) -> int:
        """Good rows that share a key with an earlier row of the source (events, outcomes:
        dropped; contacts: merged into it column by column)."""
        return self.good - self.distinct


def _attribute_sql(x: str, cls: str) -> str:
    if cls == "int":
        return f"CAST({x} AS BIGINT)"
    if cls == "float":
        return f"CAST({x} AS DOUBLE)"
    if cls == "timestamptz":
        return f"timezone('UTC', {x})"
    if cls == "timestamp":
        return f"CAST({x} AS TIMESTAMP)"
    if cls == "nested":
        return f"CAST(to_json({x}) AS VARCHAR)"
    if cls in ("text", "bool"):
        return x
    return f"CAST({x} AS VARCHAR)"


def _staging_select(
    plan: ColumnPlan,
    relation: str,
    *,
    has_row_number: bool,
    fold_extras: bool,
    now: dt.datetime,
    has_source_errors: bool = False,
) -> tuple[str, tuple[str, ...]]:
    """Build the SELECT that parses and checks every row (pure)."""
    schema = schema_for(plan.kind)
    src = quote_literal(plan.source)
    parsed: list[str] = []  # expressions over the source row `s`
    checks: list[tuple[str, str, str]] = []  # (source field, condition, detail)
    outputs: list[tuple[str, str]] = []  # (output name, expression over parsed `p`)
    for col in schema.columns:
        p = quote_ident(f"__p_{col.name}")
        if col.name not in plan.mapping:
            if schema.open and not col.required:
                continue  # contacts keep only the optional columns the source gives
            fill = "NULL" if col.default is None else repr(float(col.default))
            outputs.append((col.name, f"CAST({fill} AS {col.sql_type})"))
            continue
        source_col = plan.mapping[col.name]
        cls = type_class(plan.types[source_col])
        built = BUILDERS[col.role](f"s.{quote_ident(source_col)}", cls)
        present = quote_ident(f"__present_{col.name}")
        parsed += [f"{built.value} AS {p}", f"{built.present} AS {present}"]
        raw = f"p.{quote_ident(source_col)}"
        for cond, detail in checks_for(col, f"p.{p}", raw, f"p.{present}", now):
            checks.append((source_col, cond, detail))
        expr = f"p.{p}" if col.default is None else f"coalesce(p.{p}, {float(col.default)!r})"
        outputs.append((col.name, expr))

    attrs = plan.attributes
    if plan.kind == "events" and fold_extras and attrs:
        outputs = [
            (n, _fold_extras_sql(e, plan) if n == "properties" else e) for n, e in outputs
        ]
    if plan.kind == "contacts":
        for name, source_col in attrs.items():
            x = f"p.{quote_ident(source_col)}"
            outputs.append((name, _attribute_sql(x, type_class(plan.types[source_col]))))

    key_expr, hashed_expr = _key_sql(schema, dict(outputs))
    outputs = [(n, key_expr if n == schema.key else e) for n, e in outputs]

    at_row = f"{src} || ' row ' || CAST(p.{quote_ident(ROW_NUMBER)} AS VARCHAR)"
    field_case = " ".join(f"WHEN {c} THEN {quote_literal(f)}" for f, c, _ in checks)
    reason_case = " ".join(
        f"WHEN {c} THEN {at_row} || ', field ' || {quote_literal(repr(f))} || ': ' || {d}"
        for f, c, d in checks
    )
    raw_cols = ", ".join(f"{quote_literal(c)}: p.{quote_ident(c)}" for c in plan.types)
    raw_sql = f"CAST(to_json({{{raw_cols}}}) AS VARCHAR)" if plan.types else "'{}'"
    if has_source_errors:
        # a row the reader could not parse (ragged CSV row, broken JSON line): rejected first,
        # with the reader's reason and the row's text as it was in the file
        error, text = f"p.{quote_ident(SOURCE_ERROR)}", f"p.{quote_ident(SOURCE_TEXT)}"
        field_case = f"WHEN {error} IS NOT NULL THEN '(row)' {field_case}"
        reason_case = f"WHEN {error} IS NOT NULL THEN {at_row} || ': ' || {error} {reason_case}"
        raw_sql = (
            f"CASE WHEN {error} IS NOT NULL THEN CAST(to_json({{'text': {text}}}) AS VARCHAR) "
            f"ELSE {raw_sql} END"
        )
    field_sql = f"CASE {field_case} END" if field_case else "CAST(NULL AS VARCHAR)"
    reason_sql = f"CASE {reason_case} END" if reason_case else "CAST(NULL AS VARCHAR)"
    row = quote_ident(ROW_NUMBER)
    row_sql = f"s.{row}" if has_row_number else "row_number() OVER ()"
    parsed_sql = "".join(f", {e}" for e in parsed)
    out_sql = ", ".join(f"{e} AS {quote_ident(n)}" for n, e in outputs)
    exclude = f" EXCLUDE ({row})" if has_row_number else ""
    sql = (
        f"WITH p AS (SELECT s.*{exclude}, {row_sql} AS {row}{parsed_sql} FROM {relation} s), "
        f"q AS (SELECT p.*, {field_sql} AS __field, {reason_sql} AS __reason FROM p) "
        f"SELECT {out_sql}, {hashed_expr} AS __hashed, p.{row}, p.__field, p.__reason, "
        f"CASE WHEN p.__field IS NOT NULL THEN {raw_sql} END AS __raw FROM q p"
    )
    return sql, tuple(n for n, _ in outputs)


def _fold_extras_sql(properties: str, plan: ColumnPlan) -> str:
    """``properties`` with the extra source columns merged in as keys (pure).

    Only evaluated for rows that passed (json_merge_patch fails on invalid JSON); blank text
    cells are missing values, so they add no key; an empty object becomes NULL.
    """

    def extra(source_col: str) -> str:
        x = f"p.{quote_ident(source_col)}"
        return f"NULLIF(trim({x}), '')" if type_class(plan.types[source_col]) == "text" else x

    packed = ", ".join(f"{quote_literal(k)}: {extra(v)}" for k, v in plan.attributes.items())
    return (
        f"CASE WHEN p.__field IS NULL THEN NULLIF(CAST(json_merge_patch("
        f"coalesce({properties}, '{{}}'), to_json({{{packed}}})) AS VARCHAR), '{{}}') END"
    )


def _key_sql(schema: TableSchema, outputs: dict[str, str]) -> tuple[str, str]:
    """The given key, or (events/outcomes) an md5 of the row when the key is missing; and
    whether the key was hashed (pure).

    JSON columns are hashed through canonical_json (key order and spacing do not matter).
    """
    given = outputs[schema.key]
    if not schema.hash_of:
        return given, "false"
    parts = []
    for name in schema.hash_of:
        expr = outputs[name]
        role = schema.column(name).role
        if role == "timestamp":
            expr = f"strftime({expr}, '%Y-%m-%dT%H:%M:%S.%f')"
        elif role == "json":
            expr = f"{_CANONICAL_JSON_SQL}({expr})"
        parts.append(f"coalesce(CAST({expr} AS VARCHAR), '')")
    # md5 in SQL: vectorised, and the same in every DuckDB version (a stable id for re-ingest).
    # CASE, not coalesce: the row is only hashed (canonical_json runs in Python) without an id.
    joined = " || '|' || ".join(parts)
    return f"CASE WHEN {given} IS NULL THEN md5({joined}) ELSE {given} END", f"({given}) IS NULL"


def _infer_casts(con: duckdb.DuckDBPyConnection, table: str, names: list[str]) -> dict[str, str]:
    """Pick BIGINT / DOUBLE / BOOLEAN for text attributes whose every value fits (CSV, JSONL)."""
    if not names:
        return {}
    probes = []
    for n in names:
        x = quote_ident(n)
        probes += [
            f"bool_and({x} IS NULL OR regexp_full_match(trim({x}), '[+-]?(0|[1-9][0-9]{{0,17}})'))",
            # leading zeros ("02134") mean a code, not a number: keep it as text
            f"bool_and({x} IS NULL OR (try_cast(trim({x}) AS DOUBLE) IS NOT NULL "
            f"AND NOT regexp_full_match(trim({x}), '[+-]?0[0-9]+')))",
            f"bool_and({x} IS NULL OR lower(trim({x})) IN ('true', 'false'))",
            f"count({x})",
        ]
    row = con.execute(
        f"SELECT {', '.join(probes)} FROM {table} WHERE __field IS NULL"
    ).fetchall()[0]
    casts = {}
    for i, n in enumerate(names):
        is_int, is_float, is_bool, count = row[4 * i : 4 * i + 4]
        if not count:
            continue
        if is_int:
            casts[n] = "BIGINT"
        elif is_float:
            casts[n] = "DOUBLE"
        elif is_bool:
            casts[n] = "BOOLEAN"
    return casts


def stage_rows(
    con: duckdb.DuckDBPyConnection,
    relation: str,
    kind: Kind,
    source: str,
    *,
    column_map: Mapping[str, str] | None = None,
    fold_extras: bool = False,
    infer_types: bool = False,
    now: Any = None,
) -> StagedRows:
    """Parse and check every row of ``relation`` into a temporary table on ``con``.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        Connection the relation lives on. Its session TimeZone is set to UTC, so that
        timestamps written without an offset are read as UTC.
    relation : str
        A table, view or registered object name, or ``(SELECT ...)``. A ``__row_number``
        column, when present, gives the 1-based row in the source file.
    kind : {"events", "contacts", "outcomes"}
        Target table.
    source : str
        Name of the source, used in messages.
    column_map : mapping, optional
        Canonical name <- source column name.
    fold_extras : bool
        Events only: fold non-canonical columns into the ``properties`` JSON object.
    infer_types : bool
        Contacts only: give text attributes a numeric or boolean type when all values fit.
    now : datetime-like, optional
        Reference for the "not in the future" check (default: the current time).

    Returns
    -------
    StagedRows

    Raises
    ------
    DataValidationError
        If a required column is missing.
    """
    now = normalize_now(now)
    con.execute("SET TimeZone = 'UTC'")
    described = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    types = {str(r[0]): str(r[1]) for r in described}
    plan = plan_columns(kind, types, source, column_map)
    select, columns = _staging_select(
        plan,
        relation,
        has_row_number=ROW_NUMBER in types,
        fold_extras=fold_extras,
        now=now,
        has_source_errors=SOURCE_ERROR in types and SOURCE_TEXT in types,
    )
    table = f"__staged_{uuid.uuid4().hex[:12]}"
    _register_functions(con)
    con.execute(f"CREATE TEMP TABLE {table} AS {select}")
    identical = _number_identical_rows(con, table, kind)
    casts: dict[str, str] = {}
    if kind == "contacts" and infer_types:
        text_attrs = [a for a, c in plan.attributes.items() if type_class(plan.types[c]) == "text"]
        casts = _infer_casts(con, table, text_attrs)
    key = quote_ident(schema_for(kind).key)
    read, rejected = con.execute(f"SELECT count(*), count(__field) FROM {table}").fetchall()[0]
    # The distinct keys as a GROUP BY under a WHERE, not count(DISTINCT) FILTER (...): the same
    # number, 1.9 instead of 3.2 CPU-s on 10M event ids (DuckDB's filtered distinct aggregate is
    # the slower path).
    distinct = con.execute(
        f"SELECT count(*) FROM (SELECT {key} FROM {table} WHERE __field IS NULL AND {key} IS NOT NULL "
        f"GROUP BY {key})"
    ).fetchall()[0][0]
    good = read - rejected
    return StagedRows(table, kind, source, columns, casts, read, rejected, good, distinct, identical)


def _number_identical_rows(con: duckdb.DuckDBPyConnection, table: str, kind: Kind) -> int:
    """Give the n-th copy (n >= 2) of an identical hashed row the key md5(hash || '|' || n).

    Without an id, identical rows of one source are distinct events (see the module
    docstring); rows with a given id keep it (a repeated id is a duplicate). Returns how many
    copies were renumbered.
    """
    if not schema_for(kind).hash_of:
        return 0
    key = quote_ident(schema_for(kind).key)
    row = quote_ident(ROW_NUMBER)
    copies = f"""SELECT rowid AS __rid, row_number() OVER (PARTITION BY {key} ORDER BY {row}) AS __n
        FROM {table} WHERE __hashed AND __field IS NULL"""
    identical = con.execute(
        f"SELECT count(*) - count(DISTINCT {key}) FROM {table} WHERE __hashed AND __field IS NULL"
    ).fetchall()[0][0]
    if identical:
        con.execute(
            f"UPDATE {table} SET {key} = md5({key} || '|' || CAST(c.__n AS VARCHAR)) "
            f"FROM ({copies}) c WHERE {table}.rowid = c.__rid AND c.__n > 1"
        )
    return int(identical)


def good_rows_sql(staged: StagedRows, *, ordered: bool = True) -> str:
    """SELECT of the rows that passed, one per key, in canonical dtypes (pure).

    Events and outcomes keep the first row of a key. Contacts merge the rows of a key column by
    column: each column takes the last non-null value in source order, as loading the rows one
    file after another would (a later blank cell does not erase an earlier value). ``ordered``
    sorts by source row, which loading does not need (a sort of every row).
    """
    key = quote_ident(schema_for(staged.kind).key)

    def cast(c: str) -> str:
        return f"CAST({quote_ident(c)} AS {staged.casts[c]})" if c in staged.casts else quote_ident(c)

    row = quote_ident(ROW_NUMBER)
    where = f"FROM {staged.table} WHERE __field IS NULL"
    if staged.duplicates and staged.kind == "contacts":
        merged = ", ".join(
            f"{key}" if quote_ident(c) == key else
            f"arg_max({cast(c)}, {row}) FILTER (WHERE {quote_ident(c)} IS NOT NULL) AS {quote_ident(c)}"
            for c in staged.columns
        )
        sql = f"SELECT {merged} {where} GROUP BY {key}"
        return sql + f" ORDER BY max({row})" if ordered else sql
    cols = ", ".join(f"{cast(c)} AS {quote_ident(c)}" for c in staged.columns)
    sql = f"SELECT {cols} {where}"
    if staged.duplicates:
        sql += f" QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {row} ASC) = 1"
    return sql + f" ORDER BY {row}" if ordered else sql


def rejects_sql(staged: StagedRows) -> str:
    """SELECT of the rejected rows with the columns of the ``rejects`` table (pure)."""
    return (
        f"SELECT {quote_literal(staged.kind)} AS kind, {quote_literal(staged.source)} AS source, "
        f"CAST({quote_ident(ROW_NUMBER)} AS BIGINT) AS row_number, __field AS field, "
        f"__reason AS reason, __raw AS raw FROM {staged.table} WHERE __field IS NOT NULL "
        f"ORDER BY {quote_ident(ROW_NUMBER)}"
    )


# --------------------------------------------------------------------------- pandas entry point


def _to_text(value: Any) -> str | None:
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def normalize_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Return a copy DuckDB can scan: column names as text, object columns as text.

    Dicts and lists (e.g. a ``properties`` column of objects) become JSON text; other
    non-text objects (mixed numbers and strings from JSON) become ``str``; missing stays None.
    """
    out = frame.copy()
    out.columns = [str(c) for c in out.columns]
    for name in out.columns:
        if out[name].dtype == object:
            out[name] = out[name].map(_to_text).astype(object)
    return out


@dataclass(frozen=True)
class ValidationResult:
    """Outcome of validating one source.

    Parameters
    ----------
    kind : Kind
        Target table.
    source : str
        Name of the source.
    good : pandas.DataFrame
        Rows to load, one per key, in canonical dtypes (ids ``str``, timestamps
        ``datetime64[us]`` naive UTC, values ``float64``).
    rejects : pandas.DataFrame
        ``kind, source, row_number, field, reason, raw`` for every rejected row.
    read : int
        Rows read from the source.
    duplicates : int
        Rows sharing the key of an earlier row of the same source (events, outcomes: dropped;
        contacts: merged into one row, column by column).
    identical : int
        Events/outcomes without an id: copies of an identical earlier row, kept as distinct
        rows (see the module docstring).
    """

    kind: Kind
    source: str
    good: pd.DataFrame
    rejects: pd.DataFrame
    read: int
    duplicates: int
    identical: int = 0


def validate(
    frame: pd.DataFrame,
    kind: Kind,
    source: str,
    *,
    column_map: Mapping[str, str] | None = None,
    fold_extras: bool = False,
    infer_types: bool = False,
    now: Any = None,
) -> ValidationResult:
    """Validate a raw frame into good rows and rejects.

    Parameters
    ----------
    frame : pandas.DataFrame
        Raw rows. A ``__row_number`` column, when present, gives each row's 1-based position in
        the source file; otherwise the frame's order is used.
    kind : {"events", "contacts", "outcomes"}
        Target table.
    source : str
        Name of the source (a file name), used in messages.
    column_map, fold_extras, infer_types, now
        See :func:`stage_rows`.

    Returns
    -------
    ValidationResult

    Raises
    ------
    DataValidationError
        If a required column is missing (nothing is returned for such a source).
    """
    data = normalize_frame(frame)
    if ROW_NUMBER not in data.columns:
        data[ROW_NUMBER] = range(1, len(data) + 1)
    con = duckdb.connect()  # in-memory: validation touches no file
    try:
        con.register("__source", data)
        staged = stage_rows(
            con,
            "__source",
            kind,
            source,
            column_map=column_map,
            fold_extras=fold_extras,
            infer_types=infer_types,
            now=now,
        )
        good = con.execute(good_rows_sql(staged)).df()
        rejects = con.execute(rejects_sql(staged)).df()
    finally:
        con.close()
    # an all-NULL text column comes back as object: give every id/text column the str dtype
    text = [c.name for c in schema_for(kind).columns if c.sql_type == "VARCHAR" and c.name in good]
    good = good.astype({c: "str" for c in text})
    if rejects.empty:
        rejects = pd.DataFrame({c: pd.Series(dtype=object) for c in _REJECT_COLUMNS})
    return ValidationResult(
        kind, source, good, rejects, staged.read, staged.duplicates, staged.identical
    )
