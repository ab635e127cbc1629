"""Rule scores against a naive, row-by-row reference of the documented math."""

import json
import math
from datetime import datetime, timedelta

import ibis
import numpy as np
import pandas as pd
import pytest

from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.rules.score import assign_bands, rollup_accounts, scale_points, score_contacts

AS_OF = datetime(2025, 6, 1)

RULES = RuleSet.model_validate(
    {
        "name": "test",
        "activities": [
            {"name": "pricing", "event": "page_view", "where": {"path": "/pricing"}, "points": 5,
             "half_life_days": 7, "expires_after_days": 30, "cap": 12},
            {"name": "pages", "event": "page_view", "where": {"path": ["/", "/blog"]}, "points": 1},
            {"name": "trial", "event": "trial_started", "points": 50, "weight": 1.5},
            {"name": "feature", "event": "feature_used", "points": 10, "weight": 1.2, "half_life_days": 14, "cap": 40},
            {"name": "purchase", "event": "purchase", "points": 0.1, "per_value": True, "expires_after_days": 10},
            {"name": "big_seats", "event": "invite", "where": {"seats": 5}, "points": 7},
            {"name": "unsub", "event": "unsubscribed", "points": -20, "cap": 5},
        ],
        "fit": [
            {"name": "mid_market", "attribute": "size", "min": 50, "max": 1000, "points": 15},
            {"name": "software", "attribute": "industry", "in": ["software", "fintech"], "points": 10},
            {"name": "us", "attribute": "country", "equals": "US", "points": 3},
        ],
        "scale": {0: 0, 25: 1, 50: 2, 75: 3, 150: 4, 300: 5},
        "bands": [{"name": "cold", "min_score": 0}, {"name": "warm", "min_score": 2}, {"name": "hot", "min_score": 3.5}],
        "thresholds": {"pql": 75},
        "rollup": {"method": "top_k_mean", "k": 2},
    }
)


def _random_events(seed: int, n: int = 600, contacts: int = 25) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    types = np.array(["page_view", "trial_started", "feature_used", "purchase", "invite", "unsubscribed", "other"])
    paths = np.array(["/pricing", "/", "/blog", "/docs"])
    offsets = rng.uniform(-60, 10, size=n)  # days relative to AS_OF; some at/after it
    offsets[:5] = [0.0, -7.0, -30.0, -10.0, -1e-6]  # edges: at as_of, at expiry boundaries
    event_type = rng.choice(types, size=n)
    props = []
    for t in event_type:
        if t == "page_view":
            props.append(json.dumps({"path": str(rng.choice(paths))}))
        elif t == "invite":
            props.append(json.dumps({"seats": int(rng.choice([1, 5]))}))
        else:
            props.append(None)
    ts = [AS_OF + timedelta(days=float(o)) for o in offsets]
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "contact_id": [f"c{int(i)}" for i in rng.integers(0, contacts, size=n)],
            "event_type": event_type,
            "ts": pd.to_datetime(ts).astype("datetime64[us]"),
            "value": rng.uniform(0, 300, size=n).round(2),
            "account_id": pd.Series([None] * n, dtype="string"),
            "properties": props,
        }
    )


def _contacts(contacts: int = 26) -> pd.DataFrame:
    rng = np.random.default_rng(99)
    return pd.DataFrame(
        {
            "contact_id": [f"c{i}" for i in range(contacts)],
            "account_id": [f"a{i % 4}" for i in range(contacts)],
            "size": rng.choice([10, 50, 999, 1000, 5000], size=contacts).astype("float64"),
            "industry": rng.choice(["software", "retail", "fintech"], size=contacts),
            "country": rng.choice(["US", "DE"], size=contacts),
        }
    )


def _reference(events: pd.DataFrame, contacts: pd.DataFrame, contact_id: str, as_of: datetime) -> dict:
    """The rule math of the docs, written out one event at a time."""
    out = {}
    for a in RULES.activities:
        raw = 0.0
        for e in events[events.contact_id == contact_id].itertuples():
            if e.event_type != a.event or not (e.ts < as_of):
                continue
            if a.where:
                props = json.loads(e.properties) if e.properties else {}
                ok = True
                for key, expected in a.where.items():
                    allowed = expected if isinstance(expected, list) else [expected]
                    ok &= props.get(key) in allowed
                if not ok:
                    continue
            age = (as_of - e.ts.to_pydatetime()).total_seconds() / 86400
            if a.expires_after_days is not None and not age < a.expires_after_days:
                continue
            pts = a.points * a.weight
            if a.half_life_days is not None:
                pts *= 0.5 ** (age / a.half_life_days)
            if a.per_value:
                pts *= e.value
            raw += pts
        if a.cap is not None and raw >= 0:
            raw = a.cap * (1 - math.exp(-raw / a.cap))
        out[f"points__{a.name}"] = raw
    row = contacts.set_index("contact_id").loc[contact_id] if contact_id in set(contacts.contact_id) else None
    for f in RULES.fit:
        hit = False
        if row is not None:
            v = row[f.attribute]
            if f.equals is not None:
                hit = v == f.equals
            elif f.in_ is not None:
                hit = v in f.in_
            else:
                hit = (f.min is None or v >= f.min) and (f.max is None or v < f.max)
        out[f"points__{f.name}"] = f.points if hit else 0.0
    out["points"] = sum(out.values())
    return out


def _spine(con, contact_ids, as_ofs):
    frame = pd.DataFrame({"contact_id": contact_ids, "as_of": pd.to_datetime(as_ofs).astype("datetime64[us]")})
    return con.create_table("spine", frame, overwrite=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rule_points_match_the_documented_math_event_by_event(seed):
    events, contacts = _random_events(seed), _contacts()
    con = ibis.duckdb.connect()
    ev = con.create_table("events", events)
    ids = sorted(set(events.contact_id)) + ["c_without_events"]
    scored = score_contacts(ev, _spine(con, ids, [AS_OF] * len(ids)), RULES, contacts=contacts)
    assert len(scored) == len(ids)
    for row in scored.itertuples(index=False):
        expected = _reference(events, contacts, row.contact_id, AS_OF)
        for column, value in expected.items():
            assert getattr(row, column) == pytest.approx(value, rel=1e-9, abs=1e-9), (row.contact_id, column)
        assert row.rule_score == pytest.approx(float(np.interp(expected["points"], [0, 25, 50, 75, 150, 300], [0, 1, 2, 3, 4, 5])))
        assert row.above__pql == (expected["points"] >= 75)


def test_points_columns_add_up_to_the_total():
    events, contacts = _random_events(3), _contacts()
    con = ibis.duckdb.connect()
    ids = sorted(set(events.contact_id))
    scored = score_contacts(con.create_table("events", events), _spine(con, ids, [AS_OF] * len(ids)), RULES, contacts)
    parts = scored.filter(like="points__").sum(axis=1)
    np.testing.assert_allclose(parts, scored["points"], rtol=1e-12)
    assert (scored["points__unsub"] <= 0).all()


def test_events_at_or_after_as_of_never_move_a_score():
    events, contacts = _random_events(4), _contacts()
    past = events[events.ts < AS_OF]
    con = ibis.duckdb.connect()
    ids = sorted(set(events.contact_id))
    spine = _spine(con, ids, [AS_OF] * len(ids))
    with_future = score_contacts(con.create_table("all_events", events), spine, RULES, contacts)
    only_past = score_contacts(con.create_table("past_events", past), spine, RULES, contacts)
    pd.testing.assert_frame_equal(with_future, only_past)
    # ...while one more event in the past does move it (so the check above can fail)
    extra = pd.concat([past, past.iloc[[0]].assign(event_id="x", event_type="trial_started",
                                                    ts=pd.Timestamp(AS_OF) - pd.Timedelta(hours=1))])
    moved = score_contacts(con.create_table("extra", extra), spine, RULES, contacts)
    assert not moved["points"].equals(only_past["points"])


def test_each_spine_row_is_scored_as_of_its_own_cut_off():
    events, contacts = _random_events(5), _contacts()
    con = ibis.duckdb.connect()
    ids = sorted(set(events.contact_id))[:6]
    cuts = [AS_OF - timedelta(days=20), AS_OF]
    spine = _spine(con, ids * 2, [cuts[0]] * 6 + [cuts[1]] * 6)
    scored = score_contacts(con.create_table("events", events), spine, RULES, contacts)
    for row in scored.itertuples(index=False):
        expected = _reference(events, contacts, row.contact_id, row.as_of.to_pydatetime())
        assert row.points == pytest.approx(expected["points"], rel=1e-9, abs=1e-9)


def test_scale_is_piecewise_linear_and_clipped_at_both_ends():
    assert scale_points([-40, 0, 12.5, 75, 225, 300, 10_000], RULES).tolist() == [0, 0, 0.5, 3, 4.5, 5, 5]


def test_bands_start_at_their_minimum_inclusive():
    bands = assign_bands([0, 1.99, 2.0, 3.49, 3.5, 5], RULES)
    assert list(bands) == ["cold", "cold", "warm", "warm", "hot", "hot"]


def test_fit_criteria_on_a_missing_attribute_fail_loudly():
    events = _random_events(6)
    con = ibis.duckdb.connect()
    spine = _spine(con, ["c1"], [AS_OF])
    with pytest.raises(ValueError, match="lacks.*industry"):
        score_contacts(con.create_table("events", events), spine, RULES, contacts=_contacts().drop(columns="industry"))


def test_account_rollup_takes_the_mean_of_the_top_k_and_counts_the_hot_contacts():
    scored = pd.DataFrame(
        {
            "contact_id": ["c1", "c2", "c3", "c4"],
            "as_of": [AS_OF] * 4,
            "rule_score": [4.0, 1.0, 3.0, 3.6],
        }
    )
    contacts = pd.DataFrame({"contact_id": ["c1", "c2", "c3", "c4"], "account_id": ["a", "a", "a", "b"]})
    out = rollup_accounts(scored, contacts, RULES).set_index("account_id")
    assert out.loc["a", "rule_score"] == pytest.approx(3.5)
    assert out.loc["a", "contacts"] == 3 and out.loc["a", "top_contact_id"] == "c1"
    assert out.loc["a", "contacts_hot_or_above"] == 1 and out.loc["b", "contacts_hot_or_above"] == 1
    assert out.loc["a", "band"] == "hot"
