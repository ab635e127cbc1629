"""Point-in-time correctness: the future never moves a feature, the past always can."""

from __future__ import annotations

import functools
import random
from datetime import datetime, timedelta

import ibis
import pandas as pd
import pytest
from reference import ACCOUNTS, AS_OF, TYPES, make_world

from propensity.features.build import build_features
from propensity.features.config import AttributeSelection, FeatureConfig

# Every family, but few windows: compiling the expression dominates the test time.
CONFIG = FeatureConfig(
    windows_days=(7, 30),
    half_lives_days=(7.0,),
    value_weighted_types=("trialStarted",),
    active_days_windows=(1, 30),
    momentum_days=7,
    monetary_types=("trialStarted", "Demo Request"),  # the purchase pass too
    value_stats_types=("trialStarted",),  # and the value summaries (features/value_stats.py)
    value_thresholds={"page_view": (100.0,)},
    # every attribute, chosen without a query: the expression is compiled once over unbound tables
    attributes=AttributeSelection(columns="all"),
)
# Families added for issue 13: each must be present so the tests below cover them.
NEW_FAMILIES = ("__count_total", "__days_since_first", "__mean_gap_days", "__trend_7d_30d",
                "__rfm_frequency", "__rfm_recency_days", "__rfm_tenure_days", "__rfm_monetary",
                "__value_total", "__value_mean", "__value_min", "__value_max", "__value_last",
                "__count_value_below_100")
SEEDS = (0, 1)


@functools.cache
def _feature_sql() -> str:
    """The feature query over tables named events, contacts and spine, compiled once.

    Compiling the expression takes longer than running it on these small worlds; the data
    changes between calls, the query does not.
    """
    events = ibis.table(
        {"event_id": "string", "contact_id": "string", "event_type": "string",
         "ts": "timestamp(6)", "value": "float64", "account_id": "string",
         "properties": "string"},
        name="events",
    )  # fmt: skip
    contacts = ibis.table(
        {"contact_id": "string", "account_id": "string", "created_at": "timestamp(6)",
         "industry": "string", "employees": "int64", "is_customer": "boolean"},
        name="contacts",
    )  # fmt: skip
    spine = ibis.table({"contact_id": "string", "as_of": "timestamp(6)"}, name="spine")
    table = build_features(events, spine, CONFIG, contacts=contacts, event_types=TYPES)
    return ibis.to_sql(table, dialect="duckdb")


def _features(events: pd.DataFrame, contacts: pd.DataFrame, spine: pd.DataFrame) -> pd.DataFrame:
    con = ibis.duckdb.connect()
    con.create_table("events", events)
    con.create_table("contacts", contacts)
    con.create_table("spine", spine.astype({"as_of": "datetime64[us]"}))
    # Read fully with .df(): a half-read DuckDB 2.0 result blocks the next query.
    frame = con.raw_sql(_feature_sql()).df()
    return frame.sort_values(["contact_id", "as_of"], kind="stable").reset_index(drop=True)


def _spine(contacts: list[str], cutoffs: list[datetime]) -> pd.DataFrame:
    rows = [(c, t) for t in cutoffs for c in contacts]
    return pd.DataFrame(rows, columns=["contact_id", "as_of"])


def _with_events(events: pd.DataFrame, new: list[tuple[str, str, datetime, str | None]]):
    rng = random.Random(len(new))
    extra = pd.DataFrame(
        {
            "event_id": pd.Series([f"new{i}" for i in range(len(new))], dtype="str"),
            "contact_id": pd.Series([n[0] for n in new], dtype="str"),
            "event_type": pd.Series([n[1] for n in new], dtype="str"),
            "ts": pd.Series([n[2] for n in new], dtype="datetime64[us]"),
            "value": [rng.uniform(-5, 500) for _ in new],
            "account_id": pd.Series([n[3] for n in new], dtype="str"),
            "properties": pd.Series([None] * len(new), dtype="str"),
        }
    )
    return pd.concat([events, extra], ignore_index=True)


def _future_events(rng: random.Random, contacts: list[str], start: datetime, n: int = 300):
    """Events at or after ``start``: a third exactly at it, the rest up to a year later."""
    out = []
    for i in range(n):
        later = timedelta(0) if i % 3 == 0 else timedelta(microseconds=rng.randrange(1, 10**13))
        out.append((rng.choice(contacts), rng.choice(TYPES), start + later, rng.choice(ACCOUNTS)))
    return out


def _assert_same(left: pd.DataFrame, right: pd.DataFrame, check_dtype: bool = True) -> None:
    # Float sums may be combined in another order across threads: last-bit differences only.
    pd.testing.assert_frame_equal(
        left, right, check_exact=False, rtol=1e-13, atol=1e-13, check_dtype=check_dtype
    )


@pytest.fixture(scope="module", params=SEEDS)
def base(request):
    """A world, everyone known at AS_OF (plus a stranger) as the spine, and its features."""
    events, contacts = make_world(request.param).frames()
    everyone = sorted({*events["contact_id"], *contacts["contact_id"]}) + ["newcomer"]
    spine = _spine(everyone, [AS_OF])
    return request.param, events, contacts, spine, _features(events, contacts, spine)


def test_events_at_or_after_as_of_change_nothing(base):
    seed, events, contacts, spine, before = base
    rng = random.Random(seed)
    everyone = spine["contact_id"].tolist()
    later = _with_events(events, _future_events(rng, everyone, AS_OF))
    _assert_same(_features(later, contacts, spine), before)
    for family in NEW_FAMILIES:
        assert any(c.endswith(family) for c in before.columns), family


def test_events_before_as_of_do_change_features(base):
    # Guards the test above: it could pass on a build that ignores added events entirely.
    _, events, contacts, spine, before = base
    just_before = AS_OF - timedelta(microseconds=1)
    added = [
        ("c03", "page_view", just_before, None),
        ("newcomer", "Demo Request", just_before, None),
    ]
    after = _features(_with_events(events, added), contacts, spine)
    with pytest.raises(AssertionError):
        _assert_same(after, before)
    changed = after["contact_id"].isin(["c03", "newcomer"])
    assert (after["all__count_7d"] - before["all__count_7d"])[changed].tolist() == [1, 1]
    assert after.loc[changed, "all__days_since_last"].tolist() == pytest.approx(
        [1 / 86_400_000_000] * 2
    )
    demo = after["contact_id"] == "newcomer"
    assert after.loc[demo, "demo_request__count_total"].tolist() == [1]
    assert after.loc[demo, "demo_request__rfm_frequency"].tolist() == [0]
    assert after.loc[demo, "demo_request__rfm_tenure_days"].tolist() == [0]
    assert before.loc[demo, "demo_request__rfm_frequency"].isna().all()
    c03 = after["contact_id"] == "c03"
    assert (after.loc[c03, "page_view__count_total"] - before.loc[c03, "page_view__count_total"]).tolist() == [1]
    untouched = [c for c in after.columns if not c.startswith("account__")]
    _assert_same(after.loc[~changed, untouched], before.loc[~changed, untouched])


def test_each_row_sees_only_its_own_past():
    events, contacts = make_world(3).frames()
    rng = random.Random(3)
    cutoffs = [AS_OF - timedelta(days=45, microseconds=3), AS_OF]
    ids = sorted(events["contact_id"].unique())
    rows = [(c, rng.choice(cutoffs)) for c in ids] + [(c, AS_OF) for c in ids[:10]]
    spine = pd.DataFrame(rows, columns=["contact_id", "as_of"]).drop_duplicates()
    together = _features(events, contacts, spine)
    for cutoff in cutoffs:
        # The same rows computed from a history that ends at their own cut-off.
        alone = _features(
            events[events["ts"] < cutoff], contacts, spine[spine["as_of"] == cutoff]
        )
        mine = together[together["as_of"] == cutoff].reset_index(drop=True)
        # Subsets differ in which attribute cells are NULL, and pandas turns an int column
        # with NULLs into float; the values must still agree.
        _assert_same(mine, alone, check_dtype=False)


def test_future_events_leave_a_multi_as_of_spine_unchanged():
    events, contacts = make_world(4).frames()
    rng = random.Random(4)
    midnight = AS_OF.replace(hour=0, minute=0, second=0, microsecond=0)
    cutoffs = [AS_OF - timedelta(days=30), AS_OF - timedelta(days=1, microseconds=1), midnight, AS_OF]
    ids = sorted(contacts["contact_id"])
    spine = _spine(ids, cutoffs)
    before = _features(events, contacts, spine)
    later = _with_events(events, _future_events(rng, ids, max(cutoffs), n=200))
    _assert_same(_features(later, contacts, spine), before)
