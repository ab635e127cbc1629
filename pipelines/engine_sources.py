"""Engine sources: the tables an engine reads, checked and mapped onto the canonical columns.

Shared by ``propensity.pipelines.engines`` (DuckDB, Spark, the configs) and
``propensity.pipelines.warehouse`` (any other Ibis backend), below both. Sources are trusted to
hold the canonical columns (docs/ARCHITECTURE.md) and are checked for them, not validated row by
row: ``propensity ingest`` is the validating path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import ibis
from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

__all__ = [
    "BUILTIN_ENGINES",
    "KINDS",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "ConfigSection",
    "EngineConfigError",
    "EngineTables",
    "SourcesConfig",
    "TableSource",
    "canonical_table",
]

BUILTIN_ENGINES = ("duckdb", "spark")  # any other Ibis backend name is a warehouse engine
KINDS = ("events", "contacts", "outcomes")
# Columns a source must have; the optional ones are added as NULL when absent.
REQUIRED_COLUMNS = {
    "events": ("contact_id", "event_type", "ts"),
    "contacts": ("contact_id",),
    "outcomes": ("contact_id", "ts"),
}
OPTIONAL_COLUMNS = {
    "events": {"value": "float64", "account_id": "string", "properties": "string", "event_id": "string"},
    "contacts": {"account_id": "string", "created_at": "timestamp"},
    "outcomes": {"outcome_id": "string", "outcome": "string", "value": "float64"},
}


class EngineConfigError(ValueError):
    """An engine config or source that cannot be used; the message names the file or source."""


class ConfigSection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TableSource(ConfigSection):
    """One table: a Parquet file/folder, or a table the engine already knows (Spark catalog,
    a warehouse's ``schema.table``); ``columns`` maps canonical names to the source's."""

    parquet: str | None = None
    table: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_kind(self) -> TableSource:
        if (self.parquet is None) == (self.table is None):
            raise ValueError("give exactly one of `parquet` (a file or folder) or `table` (a catalog name)")
        return self

    def describe(self) -> str:
        return f"parquet {self.parquet}" if self.parquet is not None else f"table {self.table}"

    @classmethod
    def canonical(cls, kind: str) -> TableSource:
        """The table a warehouse holds by default: the kind's name, canonical columns."""
        return cls(table=kind)


class SourcesConfig(ConfigSection):
    events: TableSource
    contacts: TableSource | None = None
    outcomes: TableSource | None = None



@dataclass(frozen=True)
class EngineTables:
    """A connection and the canonical tables bound to it."""

    engine: str
    con: ibis.BaseBackend
    events: ibis.Table
    contacts: ibis.Table | None
    outcomes: ibis.Table | None

    @property
    def is_spark(self) -> bool:
        return self.engine == "spark"

    @property
    def is_warehouse(self) -> bool:
        """Another Ibis backend: queries run there, nothing is written there but temporary tables."""
        return self.engine not in BUILTIN_ENGINES

    @property
    def session(self) -> SparkSession:
        """The Spark session (Spark engine only)."""
        if not self.is_spark:
            raise AttributeError("only the spark engine has a Spark session")
        return self.con._session


def canonical_table(table: ibis.Table, kind: str, source: TableSource) -> ibis.Table:
    """``table`` with the canonical columns: mapped from the source's names, checked, the missing
    optional ones added as NULL."""
    table = _mapped_columns(table, kind, source)
    missing = [c for c in REQUIRED_COLUMNS[kind] if c not in table.columns]
    if missing:
        raise EngineConfigError(
            f"{kind} source ({source.describe()}) lacks column(s) {missing}; it has {list(table.columns)}"
        )
    for column in ("ts", "created_at"):
        if column in table.columns and not table[column].type().is_timestamp():
            raise EngineConfigError(
                f"{kind} source ({source.describe()}): column {column!r} is {table[column].type()}, "
                "not a timestamp (naive UTC); convert it or load the file with `propensity ingest`"
            )
    added = {
        name: ibis.null(dtype) for name, dtype in OPTIONAL_COLUMNS[kind].items() if name not in table.columns
    }
    return table.mutate(**added) if added else table


def _mapped_columns(table: ibis.Table, kind: str, source: TableSource) -> ibis.Table:
    """The source's columns renamed to the canonical ones ``source.columns`` maps them to."""
    if not source.columns:
        return table
    canonical = {*REQUIRED_COLUMNS[kind], *OPTIONAL_COLUMNS[kind]}
    where = f"{kind} source ({source.describe()})"
    if kind != "contacts":  # contacts' other columns are attributes, any name goes
        unknown = sorted(set(source.columns) - canonical)
        if unknown:
            raise EngineConfigError(f"{where}: `columns` maps unknown canonical column(s) {unknown}; "
                                    f"the {kind} columns are {sorted(canonical)}")
    absent = sorted(c for c in source.columns.values() if c not in table.columns)
    if absent:
        raise EngineConfigError(f"{where}: `columns` names column(s) {absent} it lacks; it has {list(table.columns)}")
    clash = sorted(c for c, own in source.columns.items() if c in table.columns and c != own
                   and c not in source.columns.values())
    if clash:
        raise EngineConfigError(f"{where}: it has column(s) {clash} already besides the ones mapped to them; "
                                "map or rename one of them")
    return table.rename({canonical_name: own for canonical_name, own in source.columns.items()})
