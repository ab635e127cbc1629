"""The service's incremental rule score equals the batch scorer's, event by event."""

import json
import random
from datetime import datetime, timedelta

import ibis
import pandas as pd
import pytest

from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.rules.score import score_contacts
from propensity.pipelines.serve.state import RuleScorer, from_micros, to_micros

START = datetime(2025, 1, 1)

RULES = RuleSet.model_validate(
    {
        "name": "incremental",
        "activities": [
            {"name": "pricing", "event": "page_view", "where": {"path": "/pricing"}, "points": 5,
             "half_life_days": 7, "expires_after_days": 30, "cap": 12},
            {"name": "pages", "event": "page_view", "where": {"path": ["/", "/blog"]}, "points": 1,
             "expires_after_days": 20},
            {"name": "trial", "event": "trial_started", "points": 50, "weight": 1.5, "half_life_days": 60},
            {"name": "feature", "event": "feature_used", "points": 10, "weight": 1.2,
             "half_life_days": 3.5, "expires_after_days": 12.25, "cap": 40},
            {"name": "purchase", "event": "purchase", "points": 0.1, "per_value": True,
             "half_life_days": 10, "expires_after_days": 45},
            {"name": "big_seats", "event": "invite", "where": {"seats": 5}, "points": 7},
            {"name": "flagged", "event": "invite", "where": {"admin": True}, "points": 4, "half_life_days": 2},
            {"name": "plan_five", "event": "invite", "where": {"plan": "5"}, "points": 2},
            {"name": "unsub", "event": "unsubscribed", "points": -20, "half_life_days": 30, "cap": 5},
        ],
        "fit": [
            {"name": "mid_market", "attribute": "size", "min": 50, "max": 1000, "points": 15},
            {"name": "software", "attribute": "industry", "in": ["software", "fintech"], "points": 10},
            {"name": "us", "attribute": "country", "equals": "US", "points": 3},
        ],
        "scale": {0: 0, 25: 1, 50: 2, 75: 3, 150: 4, 300: 5},
        "bands": [{"name": "cold", "min_score": 0}, {"name": "warm", "min_score": 2},
                  {"name": "hot", "min_score": 3.5}],
        "thresholds": {"pql": 75},
    }
)

_TYPES = ["page_view", "trial_started", "feature_used", "purchase", "invite", "unsubscribed", "other"]


def _random_event(rng: random.Random, n: int, contacts: int, span_days: float) -> dict:
    kind = rng.choice(_TYPES)
    props: dict | None = None
    if kind == "page_view":
        props = {"path": rng.choice(["/pricing", "/", "/blog", "/docs", 5])}
    elif kind == "invite":
        props = {"seats": rng.choice([5, 5.0, 3, "5", True]), "admin": rng.choice([True, False, "true", 1]),
                 "plan": rng.choice([5, "5", "6"])}
    elif rng.random() < 0.2:
        props = {"noise": rng.random()}
    ts = START + timedelta(microseconds=rng.randrange(int(span_days * 86_400_000_000)))
    return {
        "event_id": f"e{n}",
        "contact_id": f"c{rng.randrange(contacts)}",
        "event_type": kind,
        "ts": ts,
        "value": round(rng.uniform(-5, 500), 2) if kind == "purchase" else 1.0,
        "properties": props,
    }


def _batch_scores(events: list[dict], as_of: datetime, contacts: pd.DataFrame | None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "event_id": [e["event_id"] for e in events],
            "contact_id": [e["contact_id"] for e in events],
            "event_type": [e["event_type"] for e in events],
            "ts": pd.to_datetime([e["ts"] for e in events]).astype("datetime64[us]"),
            "value": [float(e["value"]) for e in events],
            "properties": [None if e["properties"] is None else json.dumps(e["properties"]) for e in events],
        }
    )
    ids = sorted({e["contact_id"] for e in events})
    spine = pd.DataFrame({"contact_id": ids, "as_of": pd.Series([as_of] * len(ids)).astype("datetime64[us]")})
    con = ibis.duckdb.connect()
    scored = score_contacts(con.create_table("events", frame), con.create_table("spine", spine), RULES, contacts)
    return scored.set_index("contact_id")


def _contacts(rng: random.Random, n: int) -> dict[str, dict]:
    return {
        f"c{i}": {
            "size": rng.choice([10, 50, 400, 999.5, 1000, 5000]),
            "industry": rng.choice(["software", "fintech", "retail"]),
            "country": rng.choice(["US", "DE"]),
        }
        for i in range(n)
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_rule_score_equals_batch_score_on_random_events(seed):
    rng = random.Random(seed)
    n_contacts, span = 25, 120.0
    events = [_random_event(rng, i, n_contacts, span) for i in range(3000)]
    traits = _contacts(rng, n_contacts)
    scorer = RuleScorer(RULES)
    # the service's clock starts before the last events, so some arrive "from the future"
    # (pending) and others arrive late (out of order), and time advances in uneven steps
    clock = START + timedelta(days=60)
    states = {}
    checkpoints = sorted(rng.sample(range(len(events)), 6))
    for i, event in enumerate(events):
        state = states.setdefault(event["contact_id"], scorer.new_state(clock))
        state.traits = traits[event["contact_id"]]
        scorer.advance(state, max(clock, from_micros(state.at_us)))
        scorer.apply(state, event["ts"], event["event_type"], event["value"], event["properties"])
        if i in checkpoints:
            clock += timedelta(days=rng.uniform(0, 20), microseconds=rng.randrange(10**6))
    as_of = clock + timedelta(days=3, seconds=17)
    contacts = pd.DataFrame([{"contact_id": c, **t} for c, t in traits.items()])
    expected = _batch_scores(events, as_of, contacts)
    assert len(expected) == len(states)
    compared = 0
    for contact_id, state in states.items():
        scorer.advance(state, as_of)
        view = scorer.view(contact_id, state)
        row = expected.loc[contact_id]
        for name, points in view.parts.items():
            assert points == pytest.approx(row[f"points__{name}"], abs=1e-9), (contact_id, name)
        assert view.points == pytest.approx(row["points"], abs=1e-9)
        assert view.rule_score == pytest.approx(row["rule_score"], abs=1e-9)
        assert view.band == row["band"]
        assert view.above["pql"] == bool(row["above__pql"])
        compared += 1
    # the random data must exercise what the test claims: expiry, caps, pending and late events
    assert compared == n_contacts
    assert expected["points"].nunique() > n_contacts // 2


def test_events_at_or_after_the_evaluation_time_wait_until_time_passes_them():
    scorer = RuleScorer(RULES)
    state = scorer.new_state(START)
    scorer.apply(state, START, "trial_started")  # ts == as_of: not yet counted (ts < as_of)
    assert scorer.view("c", state).parts["trial"] == 0.0
    scorer.advance(state, START + timedelta(microseconds=1))
    assert scorer.view("c", state).parts["trial"] == pytest.approx(75.0)


def test_an_expired_contribution_is_removed_exactly_at_the_window_edge():
    scorer = RuleScorer(RULES)
    state = scorer.new_state(START + timedelta(days=1))
    scorer.apply(state, START, "page_view", properties={"path": "/"})
    scorer.advance(state, START + timedelta(days=20) - timedelta(microseconds=1))
    assert scorer.view("c", state).parts["pages"] == 1.0
    scorer.advance(state, START + timedelta(days=20))  # age == 20 days: expired (age < 20 is strict)
    assert scorer.view("c", state).parts["pages"] == 0.0
    assert state.activities[1].live == []


def test_state_survives_a_json_round_trip_and_refuses_to_go_back_in_time():
    scorer = RuleScorer(RULES)
    state = scorer.new_state(START + timedelta(days=5))
    scorer.apply(state, START, "feature_used")
    scorer.apply(state, START + timedelta(days=9), "feature_used")
    again = type(state).from_json(json.loads(json.dumps(state.to_json())), len(RULES.activities))
    later = START + timedelta(days=10)
    assert scorer.peek("c", again, later) == scorer.peek("c", state, later)
    assert to_micros(from_micros(state.at_us)) == state.at_us
    with pytest.raises(ValueError, match="back in time"):
        scorer.advance(state, START)
