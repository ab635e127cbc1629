"""The SQLite driver path of insert_new / upsert stores exactly what SQLAlchemy's own insert stores."""

from __future__ import annotations

import sqlite3
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert

from propensity.pipelines.serve import db

EVENT = {"event_id": "e1", "contact_id": "c1", "event_type": "trial_started", "ts": datetime(2025, 1, 2, 3, 4, 5),
         "value": 1, "account_id": None, "properties": None, "received_at": datetime(2025, 1, 2, 3, 4, 5, 123)}
STATE = {"contact_id": "c1", "state": "{}", "scored_at": datetime(2025, 1, 1), "points": 2, "rule_score": 1.5,
         "band": "warm", "changed_at": None, "previous_score": None}
CONTACT = {"contact_id": "c1", "account_id": "a1", "created_at": datetime(2024, 5, 6), "traits": "{}",
           "updated_at": datetime(2025, 1, 1)}


def _dump(path) -> list:
    with sqlite3.connect(path) as conn:
        return [
            conn.execute(f"SELECT *, {', '.join(f'typeof({c.name})' for c in table.c)} FROM {table.name}").fetchall()
            for table in (db.events, db.score_state, db.contacts)
        ]


def _engine(path) -> sa.Engine:
    engine = db.make_engine(f"sqlite:///{path}")
    db.create_tables(engine)
    return engine


def test_sqlite_driver_path_stores_what_sqlalchemy_stores(tmp_path):
    fast, reference = _engine(tmp_path / "fast.db"), _engine(tmp_path / "reference.db")
    with fast.connect() as conn, conn.begin():
        assert db.insert_new(conn, db.events, [EVENT, EVENT], "event_id") == {"e1"}
        assert db.insert_new(conn, db.events, [EVENT], "event_id") == set()  # already stored
        db.upsert(conn, db.score_state, [{**STATE, "points": 9}], "contact_id")
        db.upsert(conn, db.score_state, [STATE], "contact_id")
        db.upsert(conn, db.contacts, [CONTACT], "contact_id", keep_when_null=("account_id", "created_at"))
        # an identify without company or createdAt keeps both
        db.upsert(conn, db.contacts, [{**CONTACT, "account_id": None, "created_at": None}], "contact_id",
                  keep_when_null=("account_id", "created_at"))
    with reference.connect() as conn, conn.begin():
        conn.execute(insert(db.events), [EVENT])
        conn.execute(insert(db.score_state), [STATE])
        conn.execute(insert(db.contacts), [CONTACT])
    fast.dispose()
    reference.dispose()
    assert _dump(tmp_path / "fast.db") == _dump(tmp_path / "reference.db")


def test_sqlite_driver_path_rolls_back_with_the_transaction(tmp_path):
    engine = _engine(tmp_path / "serve.db")
    with engine.connect() as conn:
        try:
            with conn.begin():
                db.insert_new(conn, db.events, [EVENT], "event_id")
                db.upsert(conn, db.score_state, [STATE], "contact_id")
                raise RuntimeError("the commit fails")
        except RuntimeError:
            pass
        assert conn.execute(sa.select(sa.func.count()).select_from(db.events)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(db.score_state)).scalar() == 0
    engine.dispose()
