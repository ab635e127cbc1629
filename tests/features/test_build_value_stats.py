"""Value summaries per event type (features/value_stats.py) against a naive reference."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import ibis
import pandas as pd
import pytest

from propensity.features.build import build_features
from propensity.features.config import FeatureConfig
from propensity.features.value_stats import threshold_text, value_stat_columns

AS_OF = [datetime(2024, 3, 1, 12, 0, 0, 500), datetime(2024, 4, 1)]
TYPES = ("mark", "late days", "click")
CONFIG = FeatureConfig(windows_days=(7,), half_lives_days=(7.0,), lifetime_features=False, trend_features=False,
                       monetary_types=(), account_features=False, include_attributes=False,
                       value_stats_types=("mark", "late days"),
                       value_thresholds={"mark": (40.0, 70.5), "click": (-1.0,)})


def _world(seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    start = datetime(2024, 1, 1)
    rows = []
    for i in range(400):
        ts = start + timedelta(microseconds=rng.randrange(0, 120 * 86_400 * 10**6))
        if i % 10 == 0:  # on midnights too
            ts = start + timedelta(days=rng.randrange(0, 120))
        rows.append({"event_id": f"e{i}", "contact_id": f"c{rng.randrange(12)}", "event_type": rng.choice(TYPES),
                     "ts": ts, "value": float(rng.choice([rng.uniform(-20, 100), 40.0, 70.5, -1.0])),
                     "account_id": None, "properties": None})
        if i % 10 == 0:  # a twin at the same instant, another value: which one is "last" is the tie rule
            rows.append({**rows[-1], "event_id": f"t{i}", "value": rows[-1]["value"] + rng.choice([-7.0, 7.0])})
    return pd.DataFrame(rows).astype({"ts": "datetime64[us]", "account_id": "str", "properties": "str"})


def _spine() -> pd.DataFrame:
    rows = [(f"c{i}", t) for i in range(14) for t in AS_OF]  # c12, c13 have no events
    return pd.DataFrame(rows, columns=["contact_id", "as_of"]).astype({"as_of": "datetime64[us]"})


def _built(events: pd.DataFrame, spine: pd.DataFrame, config: FeatureConfig = CONFIG) -> pd.DataFrame:
    con = ibis.duckdb.connect()
    table = build_features(con.create_table("events", events), con.create_table("spine", spine), config,
                           event_types=TYPES)
    return table.execute().sort_values(["contact_id", "as_of"]).reset_index(drop=True)


def _reference(events: pd.DataFrame, spine: pd.DataFrame) -> pd.DataFrame:
    """Plain Python, one spine row at a time, from the module's definitions."""
    records = events.to_dict("records")
    out = []
    for row in spine.sort_values(["contact_id", "as_of"]).itertuples():
        result = {"contact_id": row.contact_id, "as_of": row.as_of}
        for event_type, name in (("mark", "mark"), ("late days", "late_days"), ("click", "click")):
            seen = [e for e in records if e["contact_id"] == row.contact_id and e["event_type"] == event_type
                    and e["ts"] < row.as_of]
            values = [e["value"] for e in seen]
            if event_type in CONFIG.value_stats_types:
                latest = max((e["ts"] for e in seen), default=None)
                result[f"{name}__value_mean"] = sum(values) / len(values) if values else None
                result[f"{name}__value_min"] = min(values, default=None)
                result[f"{name}__value_max"] = max(values, default=None)
                result[f"{name}__value_last"] = max((e["value"] for e in seen if e["ts"] == latest), default=None)
            for threshold in CONFIG.value_thresholds.get(event_type, ()):
                result[f"{name}__count_value_below_{threshold_text(threshold)}"] = sum(v < threshold for v in values)
        out.append(result)
    return pd.DataFrame(out)


@pytest.mark.parametrize("seed", [0, 1])
def test_value_stats_match_the_naive_reference(seed):
    events, spine = _world(seed), _spine()
    built = _built(events, spine)
    expected = _reference(events, spine)
    columns = value_stat_columns(CONFIG, {"mark": "mark", "late days": "late_days", "click": "click"})
    stats = ("value_mean", "value_min", "value_max", "value_last")
    assert columns == [*[f"mark__{s}" for s in stats], "mark__count_value_below_40", "mark__count_value_below_70_5",
                       *[f"late_days__{s}" for s in stats], "click__count_value_below_minus_1"]
    assert list(built.columns[-len(columns):]) == columns  # after the other families, in the types' order
    for column in columns:
        got = built[column].astype("float64").to_numpy()
        want = expected[column].astype("float64").to_numpy()
        pd.testing.assert_series_equal(pd.Series(got), pd.Series(want), check_exact=False, rtol=1e-12,
                                       obj=column)
    assert built["mark__count_value_below_40"].dtype == "int64"
    # rows without events get NULL summaries; the worlds share instants (the tie rule is exercised)
    assert events.duplicated(["contact_id", "event_type", "ts"]).any()
    assert built.loc[built.contact_id.isin(["c12", "c13"]), "mark__value_last"].isna().all()


def test_events_at_or_after_as_of_move_no_value_stat():
    events, spine = _world(2), _spine()
    before = _built(events, spine)
    rng = random.Random(3)
    later = [{"event_id": f"f{i}", "contact_id": f"c{rng.randrange(14)}", "event_type": rng.choice(TYPES),
              "ts": AS_OF[i % 2] + (timedelta(0) if i % 3 == 0 else timedelta(hours=rng.randrange(1, 5000))),
              "value": rng.uniform(-100, 200), "account_id": None, "properties": None} for i in range(200)]
    later = [e for e in later if e["ts"] >= max(AS_OF)]  # at or after both cut-offs (a third exactly at one)
    grown = pd.concat([events, pd.DataFrame(later).astype({"ts": "datetime64[us]", "account_id": "str",
                                                            "properties": "str"})], ignore_index=True)
    pd.testing.assert_frame_equal(_built(grown, spine), before)
    # guard: an event just before the cut-off does move them
    just = pd.DataFrame([{"event_id": "g", "contact_id": "c12", "event_type": "mark",
                          "ts": AS_OF[1] - timedelta(microseconds=1), "value": 10.0, "account_id": None,
                          "properties": None}]).astype({"ts": "datetime64[us]", "account_id": "str", "properties": "str"})
    moved = _built(pd.concat([events, just], ignore_index=True), spine)
    row = moved[(moved.contact_id == "c12") & (moved.as_of == AS_OF[1])].iloc[0]
    assert (row["mark__value_last"], row["mark__count_value_below_40"]) == (10.0, 1)


def test_value_stats_of_a_type_the_build_does_not_know_are_refused():
    config = CONFIG.model_copy(update={"value_stats_types": ("nope",)})
    with pytest.raises(ValueError, match=r"value_stats_types / value_thresholds name \['nope'\]"):
        _built(_world(0), _spine(), config)


def test_thresholds_must_be_finite():
    with pytest.raises(ValueError, match="finite"):
        FeatureConfig(value_thresholds={"mark": (float("nan"),)})
