"""The purchase-history family (features/purchase_history.py) against a naive reference, and in time.

The reference is plain Python over the raw event records, one spine row at a time, written from
the module's definitions: events after the last purchase, the purchase days' gaps, the last day's
value. The point-in-time tests add events at or after ``as_of`` (purchases among them) and
assert nothing moves; a purchase just before ``as_of`` must move the counts (so they can fail).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import ibis
import pandas as pd
import pytest
from reference import ACCOUNTS, AS_OF, TYPES, make_world, reference_known, snake

from propensity.features.build import build_features
from propensity.features.config import FeatureConfig
from propensity.features.purchase_history import purchase_history_columns

DAY = timedelta(days=1)
MONETARY = ("trialStarted", "Demo Request")  # two purchase-like types: the earliest-anchor join too
CONFIG = FeatureConfig(windows_days=(7, 30), half_lives_days=(7.0,), monetary_types=MONETARY,
                       purchase_history_features=True, account_features=False, include_attributes=False)
NAMES = {t: snake(t) for t in TYPES}
COLUMNS = purchase_history_columns(NAMES, [t for t in TYPES if t in MONETARY])  # the given order


def _reference_row(history: list[dict], as_of: datetime) -> dict:
    out: dict = {}
    for purchase in MONETARY:
        p = snake(purchase)
        mine = [e for e in history if e["event_type"] == purchase]
        others = [t for t in TYPES if t != purchase]
        if not mine:
            out.update(dict.fromkeys([f"{p}__recency_over_gap", f"{p}__last_gap_days", f"{p}__gap_trend",
                                      f"{p}__last_value"]))
            for t in others:
                for part in ("count_since_last", "rate_since_last", "rate_before_last", "rate_change_since_last"):
                    out[f"{snake(t)}__{part}_{p}"] = None
            continue
        last = max(e["ts"] for e in mine)
        per_day: dict = {}
        for e in mine:
            per_day[e["ts"].date()] = per_day.get(e["ts"].date(), 0.0) + (e["value"] or 0.0)
        days = sorted(per_day)
        since = (as_of - last) / DAY
        mean_gap = (days[-1] - days[0]).days / (len(days) - 1) if len(days) > 1 else None
        last_gap = (days[-1] - days[-2]).days if len(days) > 1 else None
        out[f"{p}__recency_over_gap"] = since / mean_gap if mean_gap else None
        out[f"{p}__last_gap_days"] = last_gap
        out[f"{p}__gap_trend"] = last_gap / mean_gap if mean_gap else None
        out[f"{p}__last_value"] = per_day[days[-1]]
        lived = (last - min(e["ts"] for e in history)) / DAY
        for t in others:
            count = sum(1 for e in history if e["event_type"] == t and e["ts"] > last)
            before = sum(1 for e in history if e["event_type"] == t and e["ts"] <= last) / lived if lived else None
            out[f"{snake(t)}__count_since_last_{p}"] = count
            out[f"{snake(t)}__rate_since_last_{p}"] = count / since
            out[f"{snake(t)}__rate_before_last_{p}"] = before
            out[f"{snake(t)}__rate_change_since_last_{p}"] = (count / since) / before if before else None
    return out


def _reference(events: list[dict], rows: list[tuple[str, datetime]]) -> pd.DataFrame:
    out = []
    for contact, as_of in sorted(set(rows)):
        history = [e for e in events if e["contact_id"] == contact and e["ts"] < as_of]
        out.append({"contact_id": contact, "as_of": as_of, **_reference_row(history, as_of)})
    return pd.DataFrame(out)


def _built(events: pd.DataFrame, contacts: pd.DataFrame, rows: list[tuple[str, datetime]]) -> pd.DataFrame:
    con = ibis.duckdb.connect()
    ev, ct = con.create_table("events", events), con.create_table("contacts", contacts)
    spine = con.create_table("spine", pd.DataFrame(rows, columns=["contact_id", "as_of"])
                             .astype({"as_of": "datetime64[us]"}).drop_duplicates())
    frame = build_features(ev, spine, CONFIG, contacts=ct, event_types=TYPES).execute()
    frame["as_of"] = pd.to_datetime(frame["as_of"]).astype("datetime64[us]")
    return frame.sort_values(["contact_id", "as_of"], ignore_index=True)


def _cutoffs() -> list[datetime]:
    midnight = AS_OF.replace(hour=0, minute=0, second=0, microsecond=0)
    return [AS_OF, midnight, AS_OF - timedelta(days=40, microseconds=7)]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_family_matches_the_naive_reference(seed):
    world = make_world(seed, n_events=700)
    events, contacts = world.frames()
    rows = [(c, t) for t in _cutoffs() for c in reference_known(world.events, t, world.contacts)]
    built = _built(events, contacts, rows)
    want = _reference(world.events, rows)
    assert list(built.columns[-len(COLUMNS):]) == COLUMNS  # after the other features, in the named order
    got = built[["contact_id", "as_of", *COLUMNS]]
    want = want[["contact_id", "as_of", *COLUMNS]].astype({c: "float64" for c in COLUMNS})
    # enough rows of each kind for the comparison to mean something: buyers, repeat buyers, none
    counted = got["page_view__count_since_last_trial_started"]
    assert counted.notna().sum() > 20 and counted.isna().any() and (counted > 0).any() and (counted == 0).any()
    assert got["trial_started__last_gap_days"].notna().sum() > 10
    pd.testing.assert_frame_equal(got.astype({c: "float64" for c in COLUMNS}), want, check_exact=False,
                                  rtol=1e-12, atol=1e-12)


def _with(events: pd.DataFrame, new: list[tuple[str, str, datetime]]) -> pd.DataFrame:
    rng = random.Random(len(new))
    extra = pd.DataFrame({
        "event_id": pd.Series([f"new{i}" for i in range(len(new))], dtype="str"),
        "contact_id": pd.Series([n[0] for n in new], dtype="str"),
        "event_type": pd.Series([n[1] for n in new], dtype="str"),
        "ts": pd.Series([n[2] for n in new], dtype="datetime64[us]"),
        "value": [rng.uniform(-5, 500) for _ in new],
        "account_id": pd.Series([rng.choice(ACCOUNTS) for _ in new], dtype="str"),
        "properties": pd.Series([None] * len(new), dtype="str"),
    })
    return pd.concat([events, extra], ignore_index=True)


def test_events_at_or_after_as_of_move_nothing_and_a_purchase_before_it_does():
    world = make_world(5, n_events=600)
    events, contacts = world.frames()
    cutoffs = _cutoffs()
    ids = sorted(contacts["contact_id"])
    rows = [(c, t) for t in cutoffs for c in ids]
    before = _built(events, contacts, rows)
    rng = random.Random(5)
    start = min(cutoffs)
    future = []
    for i in range(400):  # purchases among them; a third exactly at the earliest cut-off
        later = timedelta(0) if i % 3 == 0 else timedelta(microseconds=rng.randrange(1, 10**13))
        future.append((rng.choice(ids), rng.choice(MONETARY + TYPES), start + later))
    # events from the earliest cut-off on are in the past of the later ones: keep each row's own future
    late = _built(_with(events, future), contacts, rows)
    for cutoff in cutoffs:
        mine = [(c, t, ts) for c, t, ts in future if ts >= cutoff]
        alone = _built(_with(events, mine), contacts, [(c, cutoff) for c in ids])
        pd.testing.assert_frame_equal(alone[COLUMNS], before[before["as_of"] == cutoff][COLUMNS].reset_index(drop=True),
                                      check_dtype=False)
    assert not late[COLUMNS].equals(before[COLUMNS])  # the later cut-offs saw the earlier future
    # guard: a purchase just before AS_OF resets that contact's counts since the last purchase to 0
    buyer = before[(before["as_of"] == AS_OF) & (before["page_view__count_since_last_trial_started"] > 0)]
    contact = buyer["contact_id"].iloc[0]
    after = _built(_with(events, [(contact, "trialStarted", AS_OF - timedelta(microseconds=1))]), contacts, rows)
    row = (after["contact_id"] == contact) & (after["as_of"] == AS_OF)
    assert after.loc[row, "page_view__count_since_last_trial_started"].tolist() == [0]
    assert after.loc[row, "page_view__rate_since_last_trial_started"].tolist() == [0.0]
    assert after.loc[row, "page_view__rate_change_since_last_trial_started"].tolist() == [0.0]
    untouched = ~row
    pd.testing.assert_frame_equal(after.loc[untouched, COLUMNS], before.loc[untouched, COLUMNS])


def test_off_by_default_and_for_models_recorded_before_it():
    assert FeatureConfig().purchase_history_features is False
    recorded = FeatureConfig(windows_days=(7,), half_lives_days=(7.0,), monetary_types=("purchase",)).model_dump()
    recorded.pop("purchase_history_features")
    assert FeatureConfig.of_model(recorded).purchase_history_features is False


def test_without_a_purchase_like_type_the_family_adds_nothing():
    events, _ = make_world(2, n_events=200).frames()
    con = ibis.duckdb.connect()
    ev = con.create_table("events", events)
    spine = con.create_table("spine", pd.DataFrame({"contact_id": ["c01"], "as_of": [AS_OF]})
                             .astype({"as_of": "datetime64[us]"}))
    config = CONFIG.model_copy(update={"monetary_types": ()})
    built = build_features(ev, spine, config, event_types=TYPES)
    assert not [c for c in built.columns if "__count_since_last_" in c or "recency_over_gap" in c]
