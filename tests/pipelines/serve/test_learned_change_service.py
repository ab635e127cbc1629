"""The service splits the learned score's last change as `explain --since` does, per component.

The model is the session's trained world (tests/worlds.py: the default champion, which reads the
rules' columns); the histories are small and hand-made so that one thing changes at a time.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import httpx
import ibis
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from propensity.pipelines.activation.backfill import contact_calls, event_calls
from propensity.pipelines.activation.triggers import TriggersConfig
from propensity.pipelines.explain.change_jobs import explain_change
from propensity.pipelines.rules import load_rules
from propensity.pipelines.serve.app import ServiceSettings
from tests.pipelines.serve.support import ROOT, WRITE_KEY, running_server

pytestmark = pytest.mark.slow

T0 = datetime(2025, 5, 1, 12)
T1 = T0 + timedelta(days=9, hours=3)
RULES = load_rules(ROOT / "configs/rules/saas.yaml")
AUTH = (WRITE_KEY, "")
CHANGED: dict = {}  # a's attributes at T1 (set by the fixture, from the world's contacts)
TYPES = ["page_view", "email_open", "feature_used", "demo_requested", "trial_started"]


def _events(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["contact_id", "event_type", "ts"])
    return frame.assign(event_id=[f"{c}-{i}" for i, c in enumerate(frame["contact_id"])],
                        ts=pd.to_datetime(frame["ts"]).astype("datetime64[us]"), value=1.0,
                        account_id=pd.Series([None] * len(frame), dtype="string"),
                        properties=pd.Series([None] * len(frame), dtype="string"))


def _history(contact: str, start: datetime, days: int = 2) -> list:
    return [(contact, kind, start + timedelta(days=d, hours=h))
            for d, kind in enumerate((TYPES * 3)[:days]) for h in (1, 5)]


@pytest.fixture(scope="module")
def served(world, tmp_path_factory):
    """One server, four contacts, two instants; the bodies of their score requests and the events.

    n: history before T0, new events between T0 and T1 (a commit at T1); d: history before T0,
    nothing new (a sweep at T1 finds its decay); a: history before T0, then at T1 an event commit
    and an identify that moves a fit attribute (two commits at T1: the second changes only it).
    """
    every = world.ws.table("contacts")
    contacts = every.head(3).reset_index(drop=True)
    contacts = contacts.assign(contact_id=["n", "d", "a"], account_id=pd.Series([None] * 3, dtype="string"),
                               created_at=pd.Series([pd.NaT] * 3, dtype="datetime64[us]"),
                               industry="retail", company_size=200)
    old = _events(_history("n", T0 - timedelta(days=8)) + _history("d", T0 - timedelta(days=7))
                  + _history("a", T0 - timedelta(days=8)))
    new_n = _events([("n", "demo_requested", T0 + timedelta(days=3)), ("n", "trial_started", T0 + timedelta(days=5)),
                     ("n", "trial_started", T0 + timedelta(days=6))]).assign(event_id=["n-new0", "n-new1", "n-new2"])
    # a's new attributes: a fit attribute of the rules (retail -> software) and every other attribute
    # to another value the world's contacts have (the model reads some of them)
    attributes = [c for c in every.columns if c not in ("contact_id", "account_id", "created_at", "industry",
                                                       "company_size")]
    changed = {"industry": "software"}
    for column in attributes:
        others = every.loc[every[column] != contacts.loc[2, column], column].dropna()
        if len(others):
            value = others.mode().iloc[0]
            changed[column] = value.item() if hasattr(value, "item") else value
    global CHANGED
    CHANGED = changed
    late_a = _events([("a", "email_open", T1 - timedelta(hours=1))]).assign(event_id=["a-new0"])
    folder = tmp_path_factory.mktemp("learned_change_service")
    triggers = TriggersConfig.model_validate({"bands": ["cold", "warm", "hot"], "triggers": [
        {"name": "first_points", "kind": "threshold_crossed", "measure": "points", "threshold": 1},
        {"name": "dropped", "kind": "score_dropped", "by": 0.01, "within_days": 30, "cooldown_hours": 0}]})
    url = f"sqlite:///{folder / 'serve.db'}"
    settings = ServiceSettings(database_url=url, rules=RULES, write_keys=frozenset({WRITE_KEY}),
                               model=world.result.scorer, model_label="world", triggers=triggers)
    clock = {"now": T0}

    def score(http, base, contact):
        return http.get(f"{base}/v1/contacts/{contact}/score").json()

    with running_server(settings, clock=lambda: clock["now"]) as (base, app), httpx.Client(auth=AUTH, timeout=120) as http:
        post = (lambda calls: http.post(f"{base}/v1/batch", json={"batch": calls}).raise_for_status())
        post(list(contact_calls(contacts)))
        post(list(event_calls(old)))
        at_t0 = {c: score(http, base, c) for c in "nda"}
        clock["now"] = T1
        post(list(event_calls(new_n)))
        app.state.runtime["writer"].request_sweep().result(timeout=60)  # d (and a) by time alone
        post(list(event_calls(late_a)))
        post([{"type": "identify", "userId": "a", "traits": CHANGED}])
        at_t1 = {c: score(http, base, c) for c in "nda"}
        plain = http.get(f"{base}/v1/contacts/n/score", params={"learned_split": "false"}).json()
    at_t1["n-plain"] = plain
    events = pd.concat([old, new_n, late_a], ignore_index=True)
    after = contacts.copy()
    for column, value in changed.items():
        after[column] = after[column].astype(object)
        after.loc[2, column] = value
        after[column] = after[column].astype(contacts[column].dtype)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        outbox = pd.read_sql("SELECT trigger, contact_id, payload, created_at, next_attempt_at "
                             "FROM activation_outbox ORDER BY id", conn)
    engine.dispose()
    return at_t0, at_t1, events, contacts, after, outbox


def _split(served, contact):
    return served[1][contact]["last_change"]["learned_split"]


@pytest.mark.parametrize("contact", ["n", "d", "a"])
def test_the_learned_split_sums_to_the_change_between_the_served_scores(served, contact):
    at_t0, at_t1 = served[0], served[1]
    split = _split(served, contact)
    assert split is not None, at_t1[contact]["last_change"].get("learned_split_note")
    assert split["until"] == T1.isoformat()
    assert split["after"] == pytest.approx(at_t1[contact]["learned_score"], abs=1e-9)
    assert sum(split["components"].values()) == pytest.approx(split["change"], abs=1e-9)
    assert sum(p["points"] for p in split["parts"]) == pytest.approx(split["change"], abs=1e-9)
    assert split["after"] - split["before"] == pytest.approx(split["change"], abs=1e-12)
    assert split["components"]["model"] == 0  # one model per process
    if split["since"] == T0.isoformat():  # n and d: their previous score was the one served at T0
        assert split["before"] == pytest.approx(at_t0[contact]["learned_score"], abs=1e-9)
    # the rule split of the same change, beside it
    rule = at_t1[contact]["last_change"]["split"]
    assert (rule["since"], rule["until"]) == (split["since"], split["until"])


def test_new_events_land_on_their_types_and_time_on_decay(served):
    split = _split(served, "n")
    assert abs(split["change"]) > 0.01
    new = {p["group"] for p in split["parts"] if p["component"] == "new_events"}
    assert new & {"demo_requested", "trial_started"} and new <= {"demo_requested", "trial_started", "all_activity",
                                                                 "tenure", "account"}
    assert split["components"]["fit"] == 0


def test_time_alone_lands_only_in_decay_expiry(served):
    split = _split(served, "d")
    assert split["since"] == T0.isoformat()  # the sweep at T1 changed the rule score by decay alone
    assert abs(split["change"]) > 0.01
    assert split["components"]["new_events"] == 0 and split["components"]["fit"] == 0
    assert split["components"]["decay_expiry"] == pytest.approx(split["change"], abs=1e-12)


def test_an_attribute_change_lands_in_fit(served):
    split = _split(served, "a")
    assert split["since"] == split["until"] == T1.isoformat()  # the identify's commit, right after the event's
    assert split["components"]["decay_expiry"] == 0 and split["components"]["new_events"] == 0
    assert split["components"]["fit"] == pytest.approx(split["change"], abs=1e-12) and abs(split["change"]) > 0
    assert {p["group"] for p in split["parts"]} <= set(CHANGED)
    assert split["notes"] == []  # the service saw the change: the attributes before it are known


@pytest.mark.parametrize("contact", ["n", "d"])
def test_the_service_split_is_explain_since_on_the_same_events(world, served, contact):
    _, _, events, before, after, _ = served
    split = _split(served, contact)
    con = ibis.duckdb.connect()
    con.create_table("events", events)
    con.create_table("contacts", after)
    report = explain_change(con, [contact], datetime.fromisoformat(split["since"]), T1, rules=RULES,
                            scorer=world.result.scorer, contacts_before=before)
    batch = report.learned
    assert batch.before[0] == pytest.approx(split["before"], abs=1e-9)
    assert batch.after[0] == pytest.approx(split["after"], abs=1e-9)
    components = batch.components().iloc[0]
    for name, value in split["components"].items():
        assert value == pytest.approx(float(components[name]), abs=1e-9), name
    served_parts = {(p["component"], p["group"]): p["points"] for p in split["parts"]}
    batch_parts = {(r.component, r.group): r.points for r in batch.parts(0).itertuples()}
    assert served_parts.keys() == batch_parts.keys()
    np.testing.assert_allclose([served_parts[k] for k in batch_parts], list(batch_parts.values()), atol=1e-9)


def test_a_triggers_message_carries_the_learned_split_of_its_change_and_is_released_at_once(served):
    at_t1, outbox = served[1], served[5]
    outbox = outbox.assign(why=[json.loads(p)["why_now"] for p in outbox["payload"]])
    first = outbox[outbox["trigger"] == "first_points"]
    assert set(first["contact_id"]) == {"n", "d", "a"}  # event commits at T0: a first score, nothing to split
    for why in first["why"]:
        assert why["learned_change_split"] is None and "first score" in why["learned_change_split_note"]
    drops = outbox[(outbox["trigger"] == "dropped") & (outbox["contact_id"] == "d")]
    assert len(drops) == 1  # the sweep at T1: d decayed
    why = drops["why"].iloc[0]
    assert "learned_change_split_note" not in why, why.get("learned_change_split_note")
    assert why["learned_change_split"] == at_t1["d"]["last_change"]["learned_split"]  # what GET gives
    assert why["change_split"] == at_t1["d"]["last_change"]["split"]
    # each message was released as soon as its split was added, not after the hold
    released = pd.to_datetime(outbox["next_attempt_at"]) - pd.to_datetime(outbox["created_at"])
    assert (released == pd.Timedelta(0)).all()


def test_a_score_request_can_leave_the_learned_split_out_and_is_told_so(served):
    plain, full = served[1]["n-plain"], served[1]["n"]
    assert plain["last_change"]["learned_split"] is None
    assert plain["last_change"]["learned_split_note"] == "not asked for (learned_split=false)"
    assert plain["last_change"]["split"] == full["last_change"]["split"]
    assert plain["learned_score"] == full["learned_score"]
