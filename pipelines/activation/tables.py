"""The activation tables, on their own :class:`sqlalchemy.MetaData` in the service database.

The service (``pipelines/serve``) owns the engine and its own tables; these live next to them so
that a trigger firing is written in the same transaction as the event that caused it.
Timestamps are UTC, stored naive (as everywhere in the project).
"""

from __future__ import annotations

import sqlalchemy as sa

from propensity.pipelines.serve.db import dialect_insert

__all__ = [
    "metadata",
    "outbox",
    "dead_letters",
    "trigger_firings",
    "score_history",
    "push_state",
    "create_activation_tables",
    "insert_ignore",
    "upsert",
]

metadata = sa.MetaData()

# One row per message to deliver. A row stays after delivery (delivered_at set) so that
# `propensity outbox list` shows history; the idempotency key is unique, so evaluating the same
# score change twice can never queue the same firing twice.
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
    sa.Index("ix_activation_outbox_due", "delivered_at", "next_attempt_at"),
    sa.Index("ix_activation_outbox_claim", "claim"),
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


def create_activation_tables(engine: sa.Engine) -> None:
    """Create the activation tables (and indexes) that do not exist yet; safe to call repeatedly."""
    metadata.create_all(engine, checkfirst=True)


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
