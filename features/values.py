"""One value at a time, the rules batch validation applies in SQL: ids, JSON text, "now",
and the quoting of DuckDB names and literals.

Split out of :mod:`propensity.features.validate` (which builds the SQL) so that the service
(:mod:`propensity.pipelines.serve.ingest`) and the readers use the same rules without the
staging machinery; ``validate`` re-exports every name here.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
from typing import Any

import duckdb
import pandas as pd

__all__ = [
    "CANONICAL_JSON_SQL",
    "INTEGRAL_TEXT",
    "EPOCH_MAX",
    "EPOCH_MS_FROM",
    "MISSING_ID",
    "MISSING_TEXT",
    "canonical_json",
    "normalize_id",
    "normalize_now",
    "quote_ident",
    "quote_literal",
    "register_functions",
]

MISSING_TEXT = ("", "null", "none")
# "nan" is a missing id (a float NaN written as text) but a non-finite *value* (rejected).
MISSING_ID = (*MISSING_TEXT, "nan")
# Epoch numbers: at or above EPOCH_MS_FROM they are milliseconds (1e11 s is the year 5138; 1e11 ms
# is 1973), at or above EPOCH_MAX they are no timestamp (1e14 ms is the year 5138). Batch ingest's SQL
# and the service read them the same way.
EPOCH_MS_FROM = 1e11
EPOCH_MAX = 1e14
# An integral number written as text ("11391.0", "11391."): the id is the part before the dot.
# The same pattern serves the SQL (batch ingest) and normalize_id (one value, the service).
INTEGRAL_TEXT = r"([+-]?[0-9]+)\.0*"
_INTEGRAL_TEXT = re.compile(INTEGRAL_TEXT)
# DuckDB name of canonical_json, registered on every connection that stages rows
CANONICAL_JSON_SQL = "__propensity_canonical_json"


def quote_ident(name: str) -> str:
    """Quote a DuckDB identifier: double quotes around it, inner double quotes doubled."""
    return '"' + str(name).replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """Quote a DuckDB string literal (``it's`` -> ``'it''s'``)."""
    return "'" + str(text).replace("'", "''") + "'"


@functools.lru_cache(maxsize=1 << 16)
def _canonical_text(text: str) -> str:
    try:
        return canonical_json(json.loads(text))
    except (ValueError, RecursionError):  # not JSON, NaN inside, nested too deep: such a row
        # is rejected (or its text is hashed as it is)
        return text


def canonical_json(value: Any) -> str:
    """The one text of a JSON value, whatever its key order and spacing (what row hashes read).

    Keys sorted at every level, ``json.dumps``' default separators and ASCII escapes: text that
    ``json.dumps`` wrote from a dict with sorted keys is already canonical (row hashes made
    before canonicalisation stay the same for it). Used by batch ingestion (as a DuckDB
    function) and by the service, so a track call and the same row in a file get one id.

    Parameters
    ----------
    value : str, dict, list or scalar
        JSON text (parsed first) or an already parsed value.
    """
    if isinstance(value, str):
        # cached: properties repeat a lot in event logs, and parsing is the cost (~5 us a row)
        return _canonical_text(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=True, allow_nan=False)


def normalize_id(value: Any) -> str | None:
    """One id as text, by the rule batch ingestion applies in SQL (see the module docstring).

    ``None``, a NaN and the missing tokens give None; ints as written; integral floats and
    integral text without the fraction (``11391.0``, ``"11391.0"`` -> ``"11391"``).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()  # as DuckDB casts a BOOLEAN column (the service refuses them)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value == math.trunc(value) and abs(value) < 1e18 else repr(value)
    if isinstance(value, int):
        return str(value)
    text = str(value).strip()
    if text.lower() in MISSING_ID:
        return None
    integral = _INTEGRAL_TEXT.fullmatch(text)
    return integral.group(1) if integral else text


def register_functions(con: duckdb.DuckDBPyConnection) -> None:
    """Make canonical_json callable from SQL on ``con`` (once per connection)."""
    known = con.execute(
        "SELECT count(*) FROM duckdb_functions() WHERE function_name = ?", [CANONICAL_JSON_SQL]
    ).fetchall()[0][0]
    if not known:
        con.create_function(CANONICAL_JSON_SQL, canonical_json, ["VARCHAR"], "VARCHAR")


def normalize_now(now: Any = None) -> dt.datetime:
    """Return ``now`` as a naive UTC datetime (default: the current time).

    Parameters
    ----------
    now : datetime-like or None
        Aware values are converted to UTC; naive values are taken as UTC.
    """
    if now is None:
        return dt.datetime.now(dt.UTC).replace(tzinfo=None)
    stamp = pd.Timestamp(now)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_pydatetime()
