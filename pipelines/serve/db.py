"""The service database: engine factory and the service's own tables (SQLAlchemy 2 Core).

SQLite (WAL) in the workspace by default, PostgreSQL when ``DATABASE_URL`` says so. The
activation tables (outbox, firings, ...) live in the same database on their own metadata
(``pipelines.activation.tables``) so that a trigger firing commits with the event behind it.

``events`` has the canonical columns of ``features.schema.EVENTS`` (plus ``received_at``), so
the batch pipeline can read what the service stored. ``score_state`` holds each contact's
incremental score state (:class:`pipelines.serve.state.ContactState` as JSON) and its latest
score, written in the same transaction as the events that moved it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from features.schema import EVENTS

__all__ = [
    "DATABASE_ENV",
    "DB_FILE",
    "contacts",
    "create_tables",
    "database_url",
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
    sa.Index("ix_score_state_score", "rule_score"),
)


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
    """Create the service tables that do not exist yet (safe to call repeatedly)."""
    metadata.create_all(engine, checkfirst=True)


def _insert(engine_or_conn: sa.Engine | sa.Connection, table: sa.Table):
    name = engine_or_conn.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        raise ValueError(f"the service supports SQLite and PostgreSQL, not {name}")
    return insert(table)


def insert_new(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], key: str) -> set[Any]:
    """Insert ``rows``, skipping keys already stored; return the keys that were new."""
    if not rows:
        return set()
    stmt = _insert(conn, table).on_conflict_do_nothing(index_elements=[key]).returning(table.c[key])
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
    stmt = _insert(conn, table)
    columns = {
        c: sa.func.coalesce(stmt.excluded[c], table.c[c]) if c in keep_when_null else stmt.excluded[c]
        for c in rows[0]
        if c != key
    }
    conn.execute(stmt.on_conflict_do_update(index_elements=[key], set_=columns), rows)
