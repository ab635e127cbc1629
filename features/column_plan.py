"""Which source column feeds which canonical column: the one refusal of a whole source.

A source is refused (:class:`DataValidationError`) only when a canonical column it needs is
missing or a mapping names a column it lacks; everything else is judged row by row in
:mod:`propensity.features.validate`. Also the coarse class of a DuckDB type (text, int, float,
timestamp, ...), which decides how a column is parsed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from propensity.features.schema import (
    READER_COLUMNS,
    STAGING_COLUMNS,
    STAGING_PREFIXES,
    Kind,
    schema_for,
)

__all__ = ["ColumnPlan", "DataValidationError", "MissingColumnsError", "plan_columns", "type_class"]

_INT_TYPES = {
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
    "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT",
}  # fmt: skip


class DataValidationError(ValueError):
    """A source cannot be loaded at all (e.g. a required column is missing)."""


class MissingColumnsError(DataValidationError):
    """A source lacks a required column (readers add a hint when they can guess why)."""


def type_class(sql_type: str) -> str:
    t = sql_type.upper()
    if t in ("VARCHAR", "JSON") or t.startswith("VARCHAR"):
        return "text"
    if t in _INT_TYPES:
        return "int"
    if t in ("FLOAT", "DOUBLE", "REAL") or t.startswith("DECIMAL"):
        return "float"
    if t == "BOOLEAN":
        return "bool"
    if t in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
        return "timestamptz"
    if t.startswith("TIMESTAMP") or t == "DATE":
        return "timestamp"
    if t.startswith(("STRUCT", "MAP", "UNION")) or t.endswith("]"):
        return "nested"
    return "other"


@dataclass(frozen=True)
class ColumnPlan:
    """Which source column feeds which canonical column.

    Parameters
    ----------
    kind : Kind
        Target table.
    source : str
        Name of the source, used in messages.
    mapping : dict
        Canonical name -> source column, for the canonical columns the source provides.
    attributes : dict
        Attribute name -> source column (contacts) or extra column name -> source column (events,
        folded into ``properties`` when asked). Empty for outcomes.
    types : dict
        Source column -> DuckDB type.
    """

    kind: Kind
    source: str
    mapping: dict[str, str]
    attributes: dict[str, str]
    types: dict[str, str]


def plan_columns(
    kind: Kind,
    columns: Mapping[str, str],
    source: str,
    column_map: Mapping[str, str] | None = None,
) -> ColumnPlan:
    """Match source columns to canonical ones.

    Parameters
    ----------
    kind : {"events", "contacts", "outcomes"}
        Target table.
    columns : mapping
        Source column name -> DuckDB type, in source order.
    source : str
        Name of the source (a file name), used in messages.
    column_map : mapping, optional
        Canonical name <- source column name, e.g. ``{"contact_id": "user_id"}``. For contacts a
        non-canonical key renames an attribute.

    Returns
    -------
    ColumnPlan

    Raises
    ------
    DataValidationError
        If a required column is missing, or ``column_map`` names a column the source lacks or
        (for events/outcomes) a canonical column that does not exist.
    """
    schema = schema_for(kind)
    found = {str(k): v for k, v in columns.items() if k not in READER_COLUMNS}
    internal = [c for c in found if c in STAGING_COLUMNS or c.startswith(STAGING_PREFIXES)]
    if internal:
        raise DataValidationError(
            f"{source}: column(s) {', '.join(map(repr, internal))} have names propensity uses "
            "internally while validating; rename them in the source"
        )
    shown = ", ".join(repr(c) for c in found) or "(none)"
    column_map = dict(column_map or {})
    unknown = [k for k in column_map if k not in schema.names]
    if unknown and not schema.open:
        raise DataValidationError(
            f"{source}: column_map names unknown {kind} column(s) "
            f"{', '.join(repr(k) for k in unknown)}; canonical columns are "
            f"{', '.join(schema.names)}"
        )
    absent = {k: v for k, v in column_map.items() if v not in found}
    if absent:
        pairs = ", ".join(f"{k!r} <- {v!r}" for k, v in absent.items())
        raise DataValidationError(
            f"{source}: column_map maps {pairs}, but the file has no such column; "
            f"found columns: {shown}"
        )
    mapping: dict[str, str] = {}
    for name in schema.names:
        if name in column_map:
            mapping[name] = column_map[name]
        elif name in found and name not in column_map.values():
            mapping[name] = name
    missing = [c for c in schema.required if c not in mapping]
    if missing:
        hint = ", ".join(f"{c!r}: '<your column>'" for c in missing)
        cli_hint = " ".join(f"--map {c}=<your column>" for c in missing)
        raise MissingColumnsError(
            f"{source}: missing required {kind} column(s) "
            f"{', '.join(repr(c) for c in missing)}; found columns: {shown}. "
            f"Rename them in the file or map them: {cli_hint} on the command line "
            f"(`init`: --{kind}-map for the {kind} file), column_map={{{hint}}} from Python"
        )
    used = set(mapping.values())
    renamed = {v: k for k, v in column_map.items() if k not in schema.names}
    attributes = {}
    if kind != "outcomes":
        attributes = {renamed.get(c, c): c for c in found if c not in used}
    return ColumnPlan(kind, source, mapping, attributes, dict(found))
