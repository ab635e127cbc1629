"""The activation tables, on their own :class:`sqlalchemy.MetaData` in the service database.

The service (``pipelines/serve``) owns the engine and its own tables; these live next to them so
that a trigger firing is written in the same transaction as the event that caused it.
Timestamps are UTC, stored naive (as everywhere in the project).
"""

from __future__ import annotations

import sqlalchemy as sa

from propensity.pipelines.sqldb import (
    add_column,
    create_missing_indexes,
    dialect_insert,
)

__all__ = [
    "metadata",
    "outbox",
    "dead_letters",
    "trigger_firings",
    "score_history",
    "push_state",
    "holdout_assignments",
    "holdout_exposures",
    "create_activation_tables",
    "migrate_table",
    "insert_ignore",
    "upsert",
]

metadata = sa.MetaData()

# One row per message to deliver. A row stays after delivery (delivered_at set) so that
# `propensity outbox list` shows history; the idempotency key is unique, so evaluating the same
# score change twice can never queue the same firing twice. Ids are never reused (SQLite needs
# AUTOINCREMENT for that: without it a deleted highest id, a dead letter's, was given again).
# `attempts` counts every attempt ever; a replay keeps it and records `attempts_at_replay`, from
# which the retry limit and backoff count again, and `replays`.
outbox = sa.Table(
    "activation_outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(128), nullable=False, unique=True),
    sa.Column("kind", sa.String(64), nullable=False),  # "trigger" (firings) or another message kind
    sa.Column("trigger", sa.String(128), nullable=True),
    sa.Column("contact_id", sa.String(256), nullable=True),
    sa.Column("payload", sa.Text, nullable=False),  # the JSON body, exactly as it will be signed
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("next_attempt_at", sa.DateTime, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("delivered_at", sa.DateTime, nullable=True),
    sa.Column("claim", sa.String(32), nullable=True),  # the token of the deliverer sending it now
    sa.Column("replays", sa.Integer, nullable=False, server_default="0"),
    sa.Column("attempts_at_replay", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_activation_outbox_due", "delivered_at", "next_attempt_at"),
    sa.Index("ix_activation_outbox_claim", "claim"),
    sqlite_autoincrement=True,
)

# Messages that failed `max_attempts` times; `propensity outbox replay --dead` moves them back.
dead_letters = sa.Table(
    "activation_dead_letters",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("outbox_id", sa.Integer, nullable=False),
    sa.Column("idempotency_key", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("trigger", sa.String(128), nullable=True),
    sa.Column("contact_id", sa.String(256), nullable=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("dead_at", sa.DateTime, nullable=False),
    sa.Column("replays", sa.Integer, nullable=False, server_default="0"),
    sa.Column("attempts_at_replay", sa.Integer, nullable=False, server_default="0"),
    sqlite_autoincrement=True,
)

# Every firing, keyed by its crossing: the same contact + trigger + crossing fires once, and the
# latest firing per (trigger, contact) is what the cooldown is measured from.
trigger_firings = sa.Table(
    "activation_trigger_firings",
    metadata,
    sa.Column("crossing_key", sa.String(128), primary_key=True),
    sa.Column("trigger", sa.String(128), nullable=False),
    sa.Column("contact_id", sa.String(256), nullable=False),
    sa.Column("fired_at", sa.DateTime, nullable=False),
    sa.Index("ix_activation_firings_contact", "trigger", "contact_id", "fired_at"),
)

# Per-contact score history, only as long as the longest "dropped within N days" window needs;
# the peak in the window is what a drop is measured from.
score_history = sa.Table(
    "activation_score_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("contact_id", sa.String(256), nullable=False),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("points", sa.Float, nullable=True),
    sa.Index("ix_activation_history_contact_at", "contact_id", "at"),
)

# What was last acknowledged by each destination for each contact: a push sends only contacts
# whose traits differ from this, and it is written per acknowledged batch (so a rerun resumes).
push_state = sa.Table(
    "activation_push_state",
    metadata,
    sa.Column("destination", sa.String(64), primary_key=True),
    sa.Column("contact_id", sa.String(256), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("traits", sa.Text, nullable=False),
    sa.Column("pushed_at", sa.DateTime, nullable=False),
)

# A holdout experiment's assignment of each contact it has seen: held out (never sent a trigger
# or a push) or treated. The group comes from a hash of experiment + contact, and once recorded
# it is what counts, so a later change of the configured share never moves a contact.
holdout_assignments = sa.Table(
    "activation_holdout_assignments",
    metadata,
    sa.Column("experiment", sa.String(128), primary_key=True),
    sa.Column("contact_id", sa.String(256), primary_key=True),
    sa.Column("held_out", sa.Boolean, nullable=False),
    sa.Column("share", sa.Float, nullable=False),  # the held-out share the contact was assigned under
    sa.Column("assigned_at", sa.DateTime, nullable=False),
)

# The first time each contact was (or, held out, would have been) acted on, per source: a
# trigger's name or "push:<destination>"; with the band it was in then. `propensity lift` counts
# conversions in the window after `at`.
holdout_exposures = sa.Table(
    "activation_holdout_exposures",
    metadata,
    sa.Column("experiment", sa.String(128), primary_key=True),
    sa.Column("source", sa.String(160), primary_key=True),
    sa.Column("contact_id", sa.String(256), primary_key=True),
    sa.Column("band", sa.String(64), nullable=True),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("held_out", sa.Boolean, nullable=False),
    sa.Index("ix_activation_exposures_at", "experiment", "at"),
)


def create_activation_tables(engine: sa.Engine) -> None:
    """Create the activation tables (and indexes) that do not exist yet, and bring tables made by
    an older version up to date; safe to call repeatedly."""
    with engine.begin() as conn:
        for table in (outbox, dead_letters):
            migrate_table(conn, table)
    metadata.create_all(engine, checkfirst=True)
    create_missing_indexes(engine, metadata)


def migrate_table(conn: sa.Connection, table: sa.Table) -> None:
    """Give an existing ``table`` the columns it lacks and, on SQLite, ``AUTOINCREMENT``.

    SQLite cannot add AUTOINCREMENT to a table, so the table is rebuilt (rows and ids kept), and
    its id sequence starts after every id ever seen, the dead letters' outbox ids included:
    without AUTOINCREMENT, the highest of those may have been freed for reuse.
    """
    inspector = sa.inspect(conn)
    if not inspector.has_table(table.name):
        return
    have = {c["name"] for c in inspector.get_columns(table.name)}
    if conn.dialect.name == "sqlite":
        sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                                   (table.name,)).scalar() or ""
        if "AUTOINCREMENT" not in sql.upper():
            _rebuild_sqlite(conn, table, have)
            return
    for column in table.columns:
        if column.name not in have:
            add_column(conn, table, column.name)


def _rebuild_sqlite(conn: sa.Connection, table: sa.Table, have: set[str]) -> None:
    old = f"{table.name}__old"
    conn.exec_driver_sql(f"ALTER TABLE {table.name} RENAME TO {old}")
    for index in table.indexes:  # they moved with the renamed table, under the same names
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {index.name}")
    table.create(conn)
    shared = ", ".join(f'"{c.name}"' for c in table.columns if c.name in have)
    conn.exec_driver_sql(f"INSERT INTO {table.name} ({shared}) SELECT {shared} FROM {old}")
    conn.exec_driver_sql(f"DROP TABLE {old}")
    seen = [f"SELECT MAX(id) FROM {table.name}"]
    if table is outbox and sa.inspect(conn).has_table(dead_letters.name):
        seen.append(f"SELECT MAX(outbox_id) FROM {dead_letters.name}")
    top = max((conn.exec_driver_sql(q).scalar() or 0) for q in seen)
    conn.exec_driver_sql("DELETE FROM sqlite_sequence WHERE name = ?", (table.name,))
    conn.exec_driver_sql("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table.name, top))


def insert_ignore(conn: sa.Connection, table: sa.Table, values: dict) -> bool:
    """Insert a row unless its key exists (``ON CONFLICT DO NOTHING``); True when it was inserted.

    A plain INSERT that hits a unique key would abort the caller's whole transaction on
    PostgreSQL, and the caller's transaction is the one storing the event.
    """
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... ON CONFLICT here
    key = list(table.primary_key.columns)[0]
    statement = dialect_insert(conn.dialect.name, table).values(values).on_conflict_do_nothing().returning(key)
    return conn.execute(statement).first() is not None


def upsert(conn: sa.Connection, table: sa.Table, rows: list[dict]) -> None:
    """Insert rows, replacing the non-key columns of rows whose primary key exists."""
    if not rows:
        return
    statement = dialect_insert(conn.dialect.name, table)
    keys = [c.name for c in table.primary_key.columns]
    conn.execute(statement.on_conflict_do_update(
        index_elements=keys,
        set_={c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys},
    ), rows)
