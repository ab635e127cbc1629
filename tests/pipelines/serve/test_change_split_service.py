"""The service says why a score changed: the split of the last change in the score response and in
a trigger's why-now payload, equal to `explain --since` on the same events."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import httpx
import ibis
import pandas as pd
import pytest
import sqlalchemy as sa
from segment.analytics.client import Client

from propensity.pipelines.activation.triggers import TriggersConfig
from propensity.pipelines.explain.change_jobs import explain_change
from propensity.pipelines.rules import load_rules
from propensity.pipelines.serve.app import ServiceSettings
from tests.pipelines.serve.support import ROOT, WRITE_KEY, running_server

NOW = datetime(2026, 3, 1, 12, 0, 0)
LATER = NOW + timedelta(days=10)
RULES = load_rules(ROOT / "configs" / "rules" / "saas.yaml")
AUTH = (WRITE_KEY, "")


def test_the_last_change_is_split_as_explain_since_splits_it_and_triggers_carry_it(tmp_path):
    triggers = TriggersConfig.model_validate({
        "bands": ["cold", "warm", "hot"],
        "triggers": [{"name": "became_warm", "kind": "band_entered", "band": "warm"}],
    })
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    settings = ServiceSettings(database_url=url, rules=RULES, write_keys=frozenset({WRITE_KEY}), triggers=triggers)
    clock = {"now": NOW}
    with running_server(settings, clock=lambda: clock["now"]) as (base, _app):
        client = Client(write_key=WRITE_KEY, host=base, max_retries=0, sync_mode=True)
        client.identify(user_id="u1", traits={"company_size": 200, "industry": "retail"})
        client.track(user_id="u1", event="webinar_attended", timestamp=NOW - timedelta(days=3), message_id="m1")
        first = httpx.get(f"{base}/v1/contacts/u1/score", auth=AUTH).json()
        clock["now"] = LATER  # ten days of decay, then new events and an attribute change in one batch
        calls = [{"type": "identify", "userId": "u1", "traits": {"company_size": 5000, "industry": "software"}}]
        calls += [{"type": "track", "userId": "u1", "event": event, "messageId": f"n{i}",
                   "timestamp": (LATER - timedelta(days=days)).isoformat() + "Z"}
                  for i, (event, days) in enumerate([("email_click", 4), ("trial_started", 2), ("email_click", 1)])]
        assert httpx.post(f"{base}/v1/batch", json={"batch": calls}, auth=AUTH).status_code == 200
        body = httpx.get(f"{base}/v1/contacts/u1/score", auth=AUTH).json()
    split = body["last_change"]["split"]
    assert split is not None and split["after"] == pytest.approx(body["last_change"]["after"], abs=1e-12)
    assert split["before"] == pytest.approx(body["last_change"]["before"], abs=1e-12)
    assert sum(split["components"].values()) == pytest.approx(split["change"], abs=1e-9)
    assert sum(p["points"] for p in split["parts"]) == pytest.approx(split["change"], abs=1e-9)
    groups = {(p["component"], p["group"]) for p in split["parts"]}
    assert groups == {("decay_expiry", "webinar_attended"), ("new_events", "email_click"),
                      ("new_events", "trial_started"), ("fit", "company_size"), ("fit", "industry")}
    assert split["top_reason"] == split["parts"][0] and split["top_reason"]["reason"] == "new trial_started events"

    # the same change from the batch engine: the stored events, the attributes at both dates
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        events = pd.read_sql(sa.text("SELECT * FROM events"), conn).drop(columns=["received_at"])
        outbox = pd.read_sql(sa.text("SELECT trigger, payload FROM activation_outbox ORDER BY id"), conn)
    engine.dispose()
    con = ibis.duckdb.connect()
    con.create_table("events", events.astype({"ts": "datetime64[us]", "value": "float64", "account_id": "string",
                                              "properties": "string"}))
    def contacts(size, industry):
        return pd.DataFrame({"contact_id": ["u1"], "account_id": pd.Series([None], dtype="string"),
                             "created_at": pd.Series([pd.NaT], dtype="datetime64[us]"),
                             "company_size": [float(size)], "industry": [industry]})

    con.create_table("contacts", contacts(5000, "software"))
    batch = explain_change(con, ["u1"], NOW, LATER, rules=RULES, contacts_before=contacts(200, "retail"))
    for name, value in batch.rule.components().iloc[0].items():
        assert split["components"][name] == pytest.approx(value, abs=1e-9), name
    assert first["last_change"]["split"] is not None  # the identify scored u1 first, the event changed it

    # the trigger that fired on the change carries the same split
    assert list(outbox["trigger"]) == ["became_warm"]
    why = json.loads(outbox["payload"][0])["why_now"]
    assert why["change_split"] == split


def test_a_store_from_before_last_split_gets_the_column_empty(tmp_path):
    from propensity.pipelines.serve import db

    old = sa.MetaData()
    columns = [sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
               for c in db.score_state.columns if c.name != "last_split"]
    old_state = sa.Table("score_state", old, *columns)
    engine = db.make_engine(f"sqlite:///{tmp_path / 'serve.db'}")
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(old_state), [{"contact_id": "a", "state": "{}", "scored_at": NOW, "points": 3.0,
                                             "rule_score": 0.1, "band": "cold", "next_due": NOW}])
    db.create_tables(engine)
    db.create_tables(engine)  # twice: nothing to do the second time
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.score_state)).one()
    engine.dispose()
    assert row.last_split is None and row.next_due == NOW and row.points == 3.0


def test_push_sends_the_top_reason_of_the_last_change_as_a_trait(tmp_path):
    from propensity.pipelines.activation.push import (
        read_scores_table,
        traits_from_scores,
    )

    url = f"sqlite:///{tmp_path / 'serve.db'}"
    settings = ServiceSettings(database_url=url, rules=RULES, write_keys=frozenset({WRITE_KEY}))
    clock = {"now": NOW}
    with running_server(settings, clock=lambda: clock["now"]) as (base, _app):
        client = Client(write_key=WRITE_KEY, host=base, max_retries=0, sync_mode=True)
        client.track(user_id="u1", event="webinar_attended", timestamp=NOW - timedelta(days=1), message_id="m1")
        client.track(user_id="u2", event="email_open", timestamp=NOW - timedelta(days=1), message_id="m2")
        clock["now"] = LATER
        client.track(user_id="u1", event="demo_requested", timestamp=LATER - timedelta(hours=1), message_id="m3")
        split = httpx.get(f"{base}/v1/contacts/u1/score", auth=AUTH).json()["last_change"]["split"]
    engine = sa.create_engine(url)
    traits = {c.contact_id: c.traits for c in traits_from_scores(read_scores_table(engine, "score_state"))}
    engine.dispose()
    top = split["top_reason"]
    assert top["reason"] == "new demo_requested events"
    assert traits["u1"]["score_change_reason"] == f"new demo_requested events ({top['points']:+.2f})"
    assert "score_change_reason" not in traits["u2"]  # scored once: no change to explain yet


def test_push_reads_the_change_reason_column_of_a_changes_file():
    from propensity.pipelines.activation.push import traits_from_scores

    frame = pd.DataFrame({"contact_id": ["a", "b"], "rule_score": [3.2, 1.0],
                          "change_reason_1": ["new trial_started events", None],
                          "change_reason_1_points": [1.5, float("nan")]})
    traits = {c.contact_id: c.traits for c in traits_from_scores(frame)}
    assert traits["a"]["score_change_reason"] == "new trial_started events (+1.50)"
    assert "score_change_reason" not in traits["b"]
