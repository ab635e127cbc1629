"""Outbox ids are never reused and a replay keeps the failure history (issue 15, item 12).

On SQLite (without ``AUTOINCREMENT``) a dead-lettered message with the highest id freed that id
for the next message; a replay reset ``attempts`` to 0. Both stores, and a store made by the
previous version, which must still open with its rows and ids.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from propensity.pipelines.activation.outbox import (RetryPolicy, WebhookSender, attempts_text, deliver_due, enqueue,
                                                    list_messages, replay)
from propensity.pipelines.activation.tables import create_activation_tables, dead_letters, metadata, outbox
from propensity.pipelines.cli import main
from propensity.pipelines.serve.db import database_url, make_engine

SECRET = "whsec-history-1"
NOW = dt.datetime(2026, 3, 1, 12, 0)


def _queue(engine, keys):
    with engine.begin() as conn:
        return [enqueue(conn, idempotency_key=k, kind="trigger", payload={"k": k}, trigger="t", contact_id="c",
                        now=NOW) for k in keys]


def _at(minutes: int) -> dt.datetime:
    return NOW + dt.timedelta(minutes=minutes)


def test_an_id_freed_by_a_dead_letter_is_never_given_again(engine, receiver):
    ids = _queue(engine, ["a", "b", "c"])
    receiver.rule = lambda request, i: (400, {}, b"refused") if b'"c"' in request.body else (200, {}, b"{}")
    with WebhookSender(receiver.url, SECRET) as sender:
        report = deliver_due(engine, sender, now=_at(1))
    assert (report.delivered, report.dead) == (2, 1)
    (later,) = _queue(engine, ["d"])
    assert later == max(ids) + 1  # on SQLite without AUTOINCREMENT this was max(ids) again
    # the dead letters' own ids neither: replay it, dead-letter it again
    (first_dead,) = [d["id"] for d in list_messages(engine, dead=True)]
    assert replay(engine, all_dead=True, now=_at(2)) == 1
    with WebhookSender(receiver.url, SECRET) as sender:
        deliver_due(engine, sender, now=_at(3))
    (second_dead,) = list_messages(engine, dead=True)
    assert second_dead["id"] > first_dead and second_dead["outbox_id"] == ids[2]


def test_replay_keeps_the_attempts_and_counts_the_limit_from_the_replay(engine, receiver):
    (message_id,) = _queue(engine, ["m"])
    receiver.default = (500, {}, b"down")
    policy = RetryPolicy(max_attempts=2, initial_seconds=1, max_seconds=1)
    with WebhookSender(receiver.url, SECRET) as sender:
        for minute in (1, 2):
            deliver_due(engine, sender, now=_at(minute), policy=policy)
        (dead,) = list_messages(engine, dead=True)
        assert dead["attempts"] == 2 and "HTTP 500" in dead["last_error"]

        assert replay(engine, all_dead=True, now=_at(3)) == 1
        (back,) = list_messages(engine)
        # the same message, its history kept
        assert back["id"] == message_id and back["attempts"] == 2 and back["replays"] == 1
        assert "HTTP 500" in back["last_error"]
        assert deliver_due(engine, sender, now=_at(3), policy=policy).retrying == 1  # 1 of 2 since the replay
        assert deliver_due(engine, sender, now=_at(4), policy=policy).dead == 1
        (dead,) = list_messages(engine, dead=True)
        assert (dead["attempts"], dead["replays"], dead["attempts_at_replay"]) == (4, 1, 2)

        assert replay(engine, all_dead=True, now=_at(5)) == 1
        receiver.default = (200, {}, b"{}")
        assert deliver_due(engine, sender, now=_at(5), policy=policy).delivered == 1
        assert replay(engine, [message_id], now=_at(6)) == 1  # a delivered one, sent again
        assert deliver_due(engine, sender, now=_at(6), policy=policy).delivered == 1
    (done,) = list_messages(engine)
    assert (done["id"], done["attempts"], done["replays"]) == (message_id, 6, 3)
    assert attempts_text(done) == "6 (1 since replay 3)"
    assert len(receiver.received) == 6


def test_outbox_list_shows_the_attempts_across_replays(tmp_path, receiver, monkeypatch, capsys):
    engine = make_engine(database_url(tmp_path))
    create_activation_tables(engine)
    _queue(engine, ["m"])
    receiver.default = (400, {}, b"refused")
    with WebhookSender(receiver.url, SECRET) as sender:
        deliver_due(engine, sender, now=_at(1))
        replay(engine, all_dead=True, now=_at(2))
        deliver_due(engine, sender, now=_at(2))
        replay(engine, all_dead=True, now=_at(3))
    engine.dispose()
    assert main(["--workspace", str(tmp_path), "outbox", "list"]) == 0
    assert "2 (0 since replay 2)" in capsys.readouterr().out


def _old_tables() -> tuple[sa.MetaData, sa.Table, sa.Table]:
    """The outbox and dead letters as the previous version created them."""
    old = sa.MetaData()
    old_outbox = sa.Table(
        "activation_outbox", old,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(128), nullable=False, unique=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("trigger", sa.String(128), nullable=True),
        sa.Column("contact_id", sa.String(256), nullable=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, default=0),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("delivered_at", sa.DateTime, nullable=True),
        sa.Column("claim", sa.String(32), nullable=True),
        sa.Index("ix_activation_outbox_due", "delivered_at", "next_attempt_at"),
        sa.Index("ix_activation_outbox_claim", "claim"),
    )
    old_dead = sa.Table(
        "activation_dead_letters", old,
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
    return old, old_outbox, old_dead


def test_a_store_made_by_the_previous_version_opens_keeps_its_rows_and_never_reuses_an_id(engine, receiver):
    metadata.drop_all(engine)
    old, old_outbox, old_dead = _old_tables()
    old.create_all(engine)
    with engine.begin() as conn:
        for key in ("a", "b", "c", "d"):
            conn.execute(sa.insert(old_outbox).values(idempotency_key=key, kind="trigger", payload="{}",
                                                      created_at=NOW, next_attempt_at=NOW, attempts=0))
        # "d" (id 4, the highest) was dead-lettered by the old version: its id was free for reuse
        conn.execute(sa.delete(old_outbox).where(old_outbox.c.id == 4))
        conn.execute(sa.insert(old_dead).values(outbox_id=4, idempotency_key="d", kind="trigger", payload="{}",
                                                created_at=NOW, attempts=8, last_error="HTTP 503: down", dead_at=NOW))
    create_activation_tables(engine)
    create_activation_tables(engine)  # twice: nothing left to do
    (new_id,) = _queue(engine, ["e"])
    assert new_id == 5
    rows = list_messages(engine)
    assert [r["id"] for r in rows] == [5, 3, 2, 1] and all(r["replays"] == 0 for r in rows)
    (dead,) = list_messages(engine, dead=True)
    assert (dead["outbox_id"], dead["attempts"], dead["last_error"]) == (4, 8, "HTTP 503: down")
    indexes = {i["name"] for i in sa.inspect(engine).get_indexes(outbox.name)}
    assert {"ix_activation_outbox_due", "ix_activation_outbox_claim"} <= indexes
    # the old dead letter replays under its own id, with its 8 attempts kept
    assert replay(engine, all_dead=True, now=_at(1)) == 1
    with WebhookSender(receiver.url, SECRET) as sender:
        assert deliver_due(engine, sender, now=_at(1)).delivered == 5
    replayed = next(r for r in list_messages(engine) if r["idempotency_key"] == "d")
    assert (replayed["id"], replayed["attempts"], replayed["replays"]) == (4, 9, 1)
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'activation_outbox'").scalar()
        assert "AUTOINCREMENT" in sql
    assert dead_letters.name in sa.inspect(engine).get_table_names()
