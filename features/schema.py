"""Canonical tables of a workspace: their columns, DuckDB types and how each column is checked.

Everything that loads data (``validate``, ``store``, ``dataset``) takes its column names from
here, so the names in ``docs/ARCHITECTURE.md`` are written down once in code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CONTACTS",
    "EVENTS",
    "KINDS",
    "OUTCOMES",
    "REJECTS",
    "READER_COLUMNS",
    "ROW_NUMBER",
    "SOURCE_ERROR",
    "SOURCE_TEXT",
    "STAGING_COLUMNS",
    "STAGING_PREFIXES",
    "TABLES",
    "Column",
    "Kind",
    "Role",
    "TableSchema",
    "schema_for",
]

Kind = Literal["events", "contacts", "outcomes"]
KINDS: tuple[Kind, ...] = ("events", "contacts", "outcomes")

# How a column is parsed and checked (see ``propensity.features.validate``).
Role = Literal["id", "text", "timestamp", "value", "json"]

# Internal column carrying the 1-based data row of the source file through validation; sources
# add it so that a rejected row can be found again in the file it came from.
ROW_NUMBER = "__row_number"
# Internal columns a reader adds for a row it could not parse (a ragged CSV row, a broken JSON
# line): the reason, and the row's text. Validation rejects such rows like any other bad row.
SOURCE_ERROR = "__source_error"
SOURCE_TEXT = "__source_text"
# Column names a source file may not use: readers add them (and validation's own working
# columns start with "__p_" / "__present_" or are these).
READER_COLUMNS = (ROW_NUMBER, SOURCE_ERROR, SOURCE_TEXT)
STAGING_COLUMNS = ("__field", "__reason", "__raw", "__hashed")
STAGING_PREFIXES = ("__p_", "__present_")


@dataclass(frozen=True)
class Column:
    """One canonical column.

    Parameters
    ----------
    name : str
        Column name in the workspace table.
    sql_type : str
        DuckDB type it is stored as.
    role : Role
        How raw values are parsed and checked.
    required : bool
        The source must provide this column (else the whole file is refused).
    nullable : bool
        A row may leave it empty. A non-nullable column that is not required is filled in
        (``event_id`` / ``outcome_id`` by a hash of the row, ``value`` by ``default``).
    default : float or None
        Value used when a ``value`` column is missing or empty.
    """

    name: str
    sql_type: str
    role: Role
    required: bool = False
    nullable: bool = True
    default: float | None = None


@dataclass(frozen=True)
class TableSchema:
    """A canonical table.

    Parameters
    ----------
    name : str
        Table name in the workspace database.
    columns : tuple of Column
        Canonical columns in table order.
    key : str
        The column that identifies a row: duplicates are detected on it.
    hash_of : tuple of str
        Columns hashed into ``key`` when the source does not give it (empty: never hashed).
    open : bool
        Whether extra source columns become attribute columns of the table (contacts).
    """

    name: str
    columns: tuple[Column, ...]
    key: str
    hash_of: tuple[str, ...] = ()
    open: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        """Canonical column names in table order."""
        return tuple(c.name for c in self.columns)

    @property
    def required(self) -> tuple[str, ...]:
        """Names of the columns a source must provide."""
        return tuple(c.name for c in self.columns if c.required)

    def column(self, name: str) -> Column:
        """Return the canonical column called ``name``."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no canonical column {name!r}")

    def ddl(self) -> str:
        """``CREATE TABLE IF NOT EXISTS`` statement for this table."""
        cols = ", ".join(
            f"{c.name} {c.sql_type}{'' if c.nullable else ' NOT NULL'}" for c in self.columns
        )
        return f"CREATE TABLE IF NOT EXISTS {self.name} ({cols})"


EVENTS = TableSchema(
    name="events",
    columns=(
        Column("event_id", "VARCHAR", "id", nullable=False),
        Column("contact_id", "VARCHAR", "id", required=True, nullable=False),
        Column("event_type", "VARCHAR", "text", required=True, nullable=False),
        Column("ts", "TIMESTAMP", "timestamp", required=True, nullable=False),
        Column("value", "DOUBLE", "value", nullable=False, default=1.0),
        Column("account_id", "VARCHAR", "id"),
        Column("properties", "VARCHAR", "json"),
    ),
    key="event_id",
    hash_of=("contact_id", "event_type", "ts", "value", "properties"),
)

CONTACTS = TableSchema(
    name="contacts",
    columns=(
        Column("contact_id", "VARCHAR", "id", required=True, nullable=False),
        Column("account_id", "VARCHAR", "id"),
        Column("created_at", "TIMESTAMP", "timestamp"),
        # when the source says these attributes took their values (a CRM's last-modified time);
        # the attribute history (features/history.py) dates a change by it, else by the ingest time
        Column("updated_at", "TIMESTAMP", "timestamp"),
    ),
    key="contact_id",
    open=True,
)

OUTCOMES = TableSchema(
    name="outcomes",
    columns=(
        Column("outcome_id", "VARCHAR", "id", nullable=False),
        Column("contact_id", "VARCHAR", "id", required=True, nullable=False),
        Column("ts", "TIMESTAMP", "timestamp", required=True, nullable=False),
        Column("outcome", "VARCHAR", "text"),
        Column("value", "DOUBLE", "value"),
    ),
    key="outcome_id",
    hash_of=("contact_id", "ts", "outcome", "value"),
)

REJECTS = TableSchema(
    name="rejects",
    columns=(
        Column("kind", "VARCHAR", "text"),
        Column("source", "VARCHAR", "text"),
        Column("row_number", "BIGINT", "value"),
        Column("field", "VARCHAR", "text"),
        Column("reason", "VARCHAR", "text"),
        Column("raw", "VARCHAR", "json"),
        Column("rejected_at", "TIMESTAMP", "timestamp"),
    ),
    key="row_number",
)

TABLES: dict[str, TableSchema] = {t.name: t for t in (EVENTS, CONTACTS, OUTCOMES, REJECTS)}


def schema_for(kind: str) -> TableSchema:
    """Return the schema of an ingestible kind (``events``, ``contacts`` or ``outcomes``).

    Raises
    ------
    ValueError
        If ``kind`` is not one of them.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    return TABLES[kind]
