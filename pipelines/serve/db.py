"""The service database: engine factory and the service's own tables (SQLAlchemy 2 Core).

SQLite (WAL) in the workspace by default, PostgreSQL when ``DATABASE_URL`` says so. The
activation tables (outbox, firings, ...) live in the same database on their own metadata
(``propensity.pipelines.activation.tables``) so that a trigger firing commits with the event behind it.

``events`` has the canonical columns of ``propensity.features.schema.EVENTS`` (plus ``received_at``), so
the batch pipeline can read what the service stored. ``score_state`` holds each contact's
incremental score state (:class:`propensity.pipelines.serve.state.ContactState` as JSON) and its latest
score, written in the same transaction as the events that moved it.
"""

from __future__ import annotations

import contextlib

import functools
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from propensity.features.schema import EVENTS
from propensity.pipelines.sqldb import (
    add_column,
    create_missing_indexes,
    dialect_insert,
)

if TYPE_CHECKING:  # the rows the writer stores (ingest imports nothing from here either way)
    from propensity.pipelines.serve.ingest import ContactUpdate, EventRow

__all__ = [
    "DATABASE_ENV",
    "DB_FILE",
    "add_column",
    "contact_record",
    "contacts",
    "create_missing_indexes",
    "create_tables",
    "database_url",
    "dialect_insert",
    "event_record",
    "events",
    "make_engine",
    "metadata",
    "score_state",
    "upsert",
]

DATABASE_ENV = "DATABASE_URL"
DB_FILE = "serve.db"

metadata = sa.MetaData()

_TYPES = {"VARCHAR": sa.String, "TIMESTAMP": sa.DateTime, "DOUBLE": sa.Float}

events = sa.Table(
    "events",
    metadata,
    *(
        sa.Column(c.name, _TYPES[c.sql_type](), primary_key=c.name == EVENTS.key, nullable=c.nullable)
        for c in EVENTS.columns
    ),
    sa.Column("received_at", sa.DateTime, nullable=False),
    sa.Index("ix_events_contact_ts", "contact_id", "ts"),
)

contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("contact_id", sa.String, primary_key=True),
    sa.Column("account_id", sa.String, nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=True),
    sa.Column("traits", sa.Text, nullable=False),  # JSON object: the merged identify traits
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

score_state = sa.Table(
    "score_state",
    metadata,
    sa.Column("contact_id", sa.String, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("scored_at", sa.DateTime, nullable=False),  # the as_of of the stored score
    sa.Column("points", sa.Float, nullable=False),
    sa.Column("rule_score", sa.Float, nullable=False),
    sa.Column("band", sa.String, nullable=False),
    sa.Column("changed_at", sa.DateTime, nullable=True),  # when rule_score last changed
    sa.Column("previous_score", sa.Float, nullable=True),  # rule_score before that change
    # when the sweep must look at this contact again (a band or trigger level may be reached, an
    # event counts or expires, or the stored score is due for a refresh); NULL: never by time alone
    sa.Column("next_due", sa.DateTime, nullable=True),
    # JSON: the split of the last change (propensity.pipelines.rules.change.split_rule_views)
    sa.Column("last_split", sa.Text, nullable=True),
    sa.Index("ix_score_state_score", "rule_score"),
    sa.Index("ix_score_state_next_due", "next_due"),
)



class KeptConnection:
    """One connection for the thread that owns it, kept open: a pool checkout per commit costs more
    than the statements. Mixed into the writer and the sweeper, each naming its engine."""

    _conn: sa.Connection | None = None

    def _connection_engine(self) -> sa.Engine:
        raise NotImplementedError

    def _connection(self) -> sa.Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self._connection_engine().connect()
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

def database_url(workspace: str | Path, env: Mapping[str, str] | None = None) -> str:
    """``$DATABASE_URL`` (PostgreSQL URLs get the psycopg 3 driver), else the workspace's SQLite file."""
    env = os.environ if env is None else env
    url = env.get(DATABASE_ENV)
    if url:
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        return url
    return f"sqlite:///{Path(workspace) / DB_FILE}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer; FULL: a commit is on disk before it is acknowledged
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str) -> sa.Engine:
    """An engine for ``url``; SQLite files get WAL and their folder is created."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def create_tables(engine: sa.Engine) -> None:
    """Create the service tables that do not exist yet, and bring older ones up to date (safe to
    call repeatedly).

    A ``score_state`` written before ``next_due`` existed gets the column, with every scored
    contact due at once (the first sweep looks at each one and schedules it); one written before
    ``last_split`` gets that column empty.
    """
    inspector = sa.inspect(engine)
    columns = {c["name"] for c in inspector.get_columns("score_state")} if inspector.has_table("score_state") else None
    if columns is not None and "next_due" not in columns:
        with engine.begin() as conn:
            add_column(conn, score_state, "next_due")
            conn.execute(sa.update(score_state).where(score_state.c.points != 0)
                         .values(next_due=score_state.c.scored_at))
    if columns is not None and "last_split" not in columns:  # NULL: no split until the next change
        with engine.begin() as conn:
            add_column(conn, score_state, "last_split")
    metadata.create_all(engine, checkfirst=True)
    create_missing_indexes(engine, metadata)


def _insert_new_statement(dialect_name: str, table: sa.Table, key: str):
    return dialect_insert(dialect_name, table).on_conflict_do_nothing(index_elements=[key]).returning(table.c[key])


def _upsert_statement(dialect_name: str, table: sa.Table, columns: Sequence[str], key: str,
                      keep_when_null: Sequence[str]):
    stmt = dialect_insert(dialect_name, table)
    replaced = {
        c: sa.func.coalesce(stmt.excluded[c], table.c[c]) if c in keep_when_null else stmt.excluded[c]
        for c in columns
        if c != key
    }
    return stmt.on_conflict_do_update(index_elements=[key], set_=replaced)


@dataclass(frozen=True)
class _DriverStatement:
    """A statement compiled once for SQLite's driver, and how a row becomes its parameters."""

    sql: str
    columns: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]

    def parameters(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(row[c] if p is None else p(row[c]) for c, p in zip(self.columns, self.processors))


@functools.lru_cache(maxsize=32)
def _driver_statement(dialect: sa.Dialect, table: sa.Table, columns: tuple[str, ...], key: str,
                      keep_when_null: tuple[str, ...] | None) -> _DriverStatement:
    """``insert_new`` (``keep_when_null`` None) or ``upsert`` SQL for ``columns``, compiled by SQLAlchemy.

    The statements are the ones the SQLAlchemy path runs, and each value goes through its
    column type's own bind processor, so the stored values are byte for byte the same.
    """
    if keep_when_null is None:
        stmt = _insert_new_statement(dialect.name, table, key)
    else:
        stmt = _upsert_statement(dialect.name, table, columns, key, keep_when_null)
    compiled = stmt.values({c: sa.bindparam(c) for c in columns}).compile(dialect=dialect)
    order = tuple(compiled.positiontup)
    processors = tuple(table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in order)
    return _DriverStatement(compiled.string, order, processors)


# On SQLite the rows go straight to the driver's cursor, on the caller's connection and so in
# its transaction (a rollback undoes them too): SQLAlchemy's per-execution and per-row work
# (parameter sets, insertmanyvalues, result wrapping) cost the writer more CPU than SQLite's own
# inserts did (measured: 52 -> 24 us per event for insert_new, 42 -> 14 for the state upsert).
# PostgreSQL keeps SQLAlchemy's batched executemany, which saves network round trips.


def insert_new(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], key: str) -> set[Any]:
    """Insert ``rows``, skipping keys already stored; return the keys that were new."""
    if not rows:
        return set()
    if conn.dialect.name == "sqlite":
        prepared = _driver_statement(conn.dialect, table, tuple(rows[0]), key, None)
        cursor = conn.connection.cursor()
        try:
            # one row per execute: a cached prepared statement, and no bound-variable limit
            found = [cursor.execute(prepared.sql, prepared.parameters(row)).fetchone() for row in rows]
        finally:
            cursor.close()
        return {f[0] for f in found if f is not None}
    stmt = _insert_new_statement(conn.dialect.name, table, key)
    return set(conn.execute(stmt, list(rows)).scalars())


def upsert(
    conn: sa.Connection,
    table: sa.Table,
    rows: Iterable[Mapping[str, Any]],
    key: str,
    *,
    keep_when_null: Sequence[str] = (),
) -> None:
    """Insert ``rows``, replacing the other columns of keys already stored.

    Columns in ``keep_when_null`` keep their stored value when the new row leaves them NULL
    (an identify call without ``company_id`` does not erase the account).
    """
    rows = list(rows)
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        prepared = _driver_statement(conn.dialect, table, tuple(rows[0]), key, tuple(keep_when_null))
        cursor = conn.connection.cursor()
        try:
            cursor.executemany(prepared.sql, [prepared.parameters(row) for row in rows])
        finally:
            cursor.close()
        return
    stmt = _upsert_statement(conn.dialect.name, table, list(rows[0]), key, keep_when_null)
    conn.execute(stmt, rows)


def event_record(event: EventRow, now: datetime) -> dict[str, Any]:
    """A row of :data:`events` for an event stored at ``now``."""
    return {
        "event_id": event.event_id,
        "contact_id": event.contact_id,
        "event_type": event.event_type,
        "ts": event.ts,
        "value": event.value,
        "account_id": event.account_id,
        "properties": event.properties,
        "received_at": now,
    }


def contact_record(updates: list[ContactUpdate], traits: dict[str, Any], now: datetime) -> dict[str, Any]:
    """One contacts row for all of a contact's updates in a commit (in order): the latest
    account and creation time given, None where no update gave one (the store then keeps its own)."""
    return {
        "contact_id": updates[0].contact_id,
        "account_id": next((u.account_id for u in reversed(updates) if u.account_id is not None), None),
        "created_at": next((u.created_at for u in reversed(updates) if u.created_at is not None), None),
        "traits": json.dumps(traits, default=str),
        "updated_at": now,
    }

