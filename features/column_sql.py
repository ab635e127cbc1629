"""The SQL that parses and checks one canonical column of a source row (pure string builders).

Split out of :mod:`propensity.features.validate`, which assembles these per-column pieces into
the staging ``SELECT``; the parsing rules themselves are described in that module's docstring.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from propensity.features.schema import Column
from propensity.features.values import (
    EPOCH_MAX,
    EPOCH_MS_FROM,
    INTEGRAL_TEXT,
    MISSING_ID,
    MISSING_TEXT,
    quote_literal,
)

_EPOCH_MS_FROM, _EPOCH_MAX = EPOCH_MS_FROM, EPOCH_MAX
_SHOW_CHARS = 80  # raw values quoted in messages are cut to this length
_MISSING_TEXT, _MISSING_ID = MISSING_TEXT, MISSING_ID


def ts_literal(value: dt.datetime) -> str:
    return f"TIMESTAMP '{value.strftime('%Y-%m-%d %H:%M:%S.%f')}'"


@dataclass(frozen=True)
class _ColumnSql:
    """SQL for one canonical column over a source value: its parsed value, and whether the
    source gave a value at all (so "missing" and "cannot parse" can be told apart)."""

    value: str
    present: str


def _show(raw: str) -> str:
    quote = quote_literal("'")  # the SQL literal for one single quote
    return f"{quote} || left(CAST({raw} AS VARCHAR), {_SHOW_CHARS}) || {quote}"


def _missing_text(expr: str, tokens: tuple[str, ...]) -> str:
    """``trim(expr)``, NULL when it is one of ``tokens`` (any case).

    The same as ``CASE WHEN lower(trim(x)) IN tokens THEN NULL ELSE trim(x) END``, written so
    that a typical value costs two prefix/suffix tests and a length: DuckDB's ``trim`` strips
    spaces only, so a value without a leading or trailing space is its own trim, and only a
    value as short as the longest token can be one. That halved the cost of an id column
    (0.93 -> 0.56 CPU-s per 10M rows), and ingest reads four or five such columns.
    """
    listed = ", ".join(quote_literal(t) for t in tokens)
    longest = max(len(t) for t in tokens)
    t = f"(CASE WHEN starts_with({expr}, ' ') OR ends_with({expr}, ' ') THEN trim({expr}) ELSE {expr} END)"
    return f"CASE WHEN length({t}) <= {longest} AND lower({t}) IN ({listed}) THEN NULL ELSE {t} END"


def _epoch(d: str) -> str:
    return (
        f"CASE WHEN NOT isfinite({d}) OR abs({d}) >= {_EPOCH_MAX} THEN NULL "
        f"WHEN abs({d}) >= {_EPOCH_MS_FROM} THEN make_timestamp(CAST(round({d} * 1e3) AS BIGINT)) "
        f"ELSE make_timestamp(CAST(round({d} * 1e6) AS BIGINT)) END"
    )


def _id_sql(x: str, cls: str) -> _ColumnSql:
    if cls == "int":
        value = f"CAST({x} AS VARCHAR)"
    elif cls == "float":
        d = f"CAST({x} AS DOUBLE)"
        value = (
            f"CASE WHEN NOT isfinite({d}) THEN NULL "
            f"WHEN {d} = trunc({d}) AND abs({d}) < 1e18 THEN CAST(CAST({d} AS BIGINT) AS VARCHAR) "
            f"ELSE CAST({d} AS VARCHAR) END"
        )
    else:
        t = _missing_text(f"CAST({x} AS VARCHAR)", _MISSING_ID)
        # the pattern needs a dot: contains() is a memchr, the regular expression is not
        value = (f"CASE WHEN contains({t}, '.') THEN regexp_replace({t}, "
                 f"{quote_literal('^' + INTEGRAL_TEXT + '$')}, '\\1') ELSE {t} END")
    return _ColumnSql(value, f"({value}) IS NOT NULL")


def _text_sql(x: str, cls: str) -> _ColumnSql:
    value = _missing_text(f"CAST({x} AS VARCHAR)", _MISSING_TEXT)
    return _ColumnSql(value, f"({value}) IS NOT NULL")


def _timestamp_sql(x: str, cls: str) -> _ColumnSql:
    if cls == "timestamptz":
        return _ColumnSql(f"timezone('UTC', {x})", f"{x} IS NOT NULL")
    if cls == "timestamp":
        return _ColumnSql(f"CAST({x} AS TIMESTAMP)", f"{x} IS NOT NULL")
    if cls in ("int", "float", "bool"):
        return _ColumnSql(_epoch(f"CAST({x} AS DOUBLE)"), f"{x} IS NOT NULL")
    t = _missing_text(f"CAST({x} AS VARCHAR)", _MISSING_TEXT)
    numeric = f"regexp_full_match({t}, '[+-]?[0-9]+(\\.[0-9]*)?([eE][+-]?[0-9]+)?')"
    # Text without an offset is read as UTC: stage_rows sets the session TimeZone to UTC.
    value = (
        f"CASE WHEN {t} IS NULL THEN NULL "
        f"WHEN {numeric} THEN {_epoch(f'try_cast({t} AS DOUBLE)')} "
        f"ELSE timezone('UTC', try_cast({t} AS TIMESTAMPTZ)) END"
    )
    return _ColumnSql(value, f"({t}) IS NOT NULL")


def _value_sql(x: str, cls: str) -> _ColumnSql:
    if cls in ("int", "float"):
        return _ColumnSql(f"CAST({x} AS DOUBLE)", f"{x} IS NOT NULL")
    if cls == "bool":
        return _ColumnSql(f"CAST(CAST({x} AS INTEGER) AS DOUBLE)", f"{x} IS NOT NULL")
    t = _missing_text(f"CAST({x} AS VARCHAR)", _MISSING_TEXT)
    return _ColumnSql(f"try_cast({t} AS DOUBLE)", f"({t}) IS NOT NULL")


def _json_sql(x: str, cls: str) -> _ColumnSql:
    if cls == "nested":
        value = f"CAST(to_json({x}) AS VARCHAR)"
    else:
        value = _missing_text(f"CAST({x} AS VARCHAR)", ("", "null"))
    return _ColumnSql(value, f"({value}) IS NOT NULL")


BUILDERS = {
    "id": _id_sql,
    "text": _text_sql,
    "timestamp": _timestamp_sql,
    "value": _value_sql,
    "json": _json_sql,
}


def checks_for(
    col: Column, p: str, raw: str, present: str, now: dt.datetime
) -> list[tuple[str, str]]:
    """Ordered (condition, detail) pairs rejecting a row for canonical column ``col``.

    ``p`` is the parsed value, ``raw`` the source value, ``present`` a boolean column saying
    whether the source gave a value.
    """
    must = col.required and not col.nullable and col.default is None
    if col.role in ("id", "text"):
        return [(f"NOT {present}", "'is empty'")] if must else []
    if col.role == "timestamp":
        shown = f"strftime({p}, '%Y-%m-%d %H:%M:%S')"
        checks = [(f"NOT {present}", "'is missing'")] if must else []
        return [
            *checks,
            (f"{present} AND {p} IS NULL", f"'cannot parse ' || {_show(raw)} || ' as a timestamp'"),
            (
                f"{p} < TIMESTAMP '1970-01-01'",
                f"'timestamp ' || {shown} || ' is before 1970-01-01'",
            ),
            (
                f"{p} > {ts_literal(now)} + INTERVAL 1 DAY",
                f"'timestamp ' || {shown} || ' is more than 1 day after now ("
                f"{now.strftime('%Y-%m-%d %H:%M:%S')} UTC)'",
            ),
        ]
    if col.role == "value":
        return [
            (f"{present} AND {p} IS NULL", f"'cannot parse ' || {_show(raw)} || ' as a number'"),
            (f"NOT isfinite({p})", f"{_show(raw)} || ' is not a finite number'"),
        ]
    # json: invalid text first, so json_type only ever sees valid JSON
    return [
        (f"{p} IS NOT NULL AND NOT json_valid({p})", f"{_show(p)} || ' is not valid JSON'"),
        (
            f"{p} IS NOT NULL AND try(json_type({p})) <> 'OBJECT'",
            f"'expected a JSON object, got ' || lower(try(json_type({p}))) || ' ' || {_show(p)}",
        ),
        # DuckDB's parser accepts NaN and Infinity, which are no JSON (strict readers refuse
        # the stored text): outside string literals, minified JSON has no other such word. The
        # cheap contains() first: the regular expressions cost ~2 s per 1M rows, this ~0.2 s.
        (
            f"{p} IS NOT NULL AND (contains(lower({p}), 'nan') OR contains(lower({p}), 'inf')) "
            f"AND regexp_matches(regexp_replace(json({p}), "
            f"'\"(\\\\.|[^\"\\\\])*\"', '', 'g'), '(?i)nan|infinity')",
            f"{_show(p)} || ' is not valid JSON (NaN and Infinity are no JSON numbers)'",
        ),
    ]
