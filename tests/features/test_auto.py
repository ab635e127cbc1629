"""Windows and half-lives from the data: the proposal, the cadence and the resolved config."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

import ibis
import pandas as pd
import pytest

from propensity.features.auto import (
    NICE_DAYS,
    measure_cadence,
    propose_windows,
    resolve_feature_config,
)
from propensity.features.build import build_features, feature_columns
from propensity.features.config import FeatureConfig
from propensity.features.spine import spine_at


@pytest.mark.parametrize("gap", [0.5, 2.0, 9.0, math.nan])
@pytest.mark.parametrize(("horizon", "span"), [(7, 60), (30, 180), (90, 400), (270, 400), (30, 20)])
def test_proposals_scale_with_the_horizon_and_stay_inside_the_history(horizon, span, gap):
    got = propose_windows(horizon, gap, span)
    assert got.windows_days == tuple(sorted(set(got.windows_days)))
    assert set(got.windows_days) <= set(NICE_DAYS) and max(got.windows_days) <= span
    assert max(got.active_days_windows) <= max(got.windows_days)
    # one half-life at most a tenth of the horizon (or a day): what fades within the horizon
    assert min(got.half_lives_days) <= max(horizon / 10, 1.0)
    assert max(got.half_lives_days) == float(min(NICE_DAYS, key=lambda c: abs(math.log(c / horizon))))
    if span >= 3 * horizon:
        assert max(got.windows_days) >= 2 * horizon  # history beyond the horizon


def test_longer_horizons_get_longer_windows_and_a_slower_cadence_longer_short_windows():
    assert propose_windows(7, 1, 400).windows_days < propose_windows(90, 1, 400).windows_days
    assert min(propose_windows(30, 14, 400).windows_days) > min(propose_windows(30, 1, 400).windows_days)
    with pytest.raises(ValueError, match="horizon_days must be positive"):
        propose_windows(0, 1, 10)


def _random_log(seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    start = datetime(2024, 1, 1)
    rows = []
    for c in range(30):
        for _ in range(rng.choice([1, 2, 5, 20])):
            ts = start + timedelta(microseconds=rng.randrange(120 * 86_400_000_000))
            rows.append((f"c{c}", rng.choice(["a", "b"]), ts, rng.choice([1.0, 1.0, 9.5])))
    frame = pd.DataFrame(rows, columns=["contact_id", "event_type", "ts", "value"])
    frame["ts"] = frame["ts"].astype("datetime64[us]")
    frame["account_id"] = pd.Series([None] * len(frame), dtype="str")
    return frame


def test_cadence_is_the_median_mean_gap_between_active_days():
    frame = _random_log(0)
    events = ibis.duckdb.connect().create_table("events", frame)
    got = measure_cadence(events)
    days = frame.assign(day=frame["ts"].dt.normalize()).drop_duplicates(["contact_id", "day"])
    per = days.groupby("contact_id")["day"].agg(["min", "max", "size"])
    per = per[per["size"] > 1]
    gaps = (per["max"] - per["min"]).dt.days / (per["size"] - 1)
    assert got.gap_days == pytest.approx(gaps.median(), rel=1e-12)  # exact, on every engine
    assert got.span_days == pytest.approx((frame["ts"].max() - frame["ts"].min()) / pd.Timedelta(days=1))


def test_resolving_auto_fills_every_choice_and_says_which():
    frame = _random_log(1)
    events = ibis.duckdb.connect().create_table("events", frame)
    config = FeatureConfig(windows_days="auto", half_lives_days="auto")
    resolved, note = resolve_feature_config(config, events, ["a", "b"], horizon_days=14)
    assert resolved.is_resolved and resolved.monetary_types == ("a", "b")
    cadence = measure_cadence(events)
    proposal = propose_windows(14, cadence.gap_days, cadence.span_days)
    assert resolved.windows_days == proposal.windows_days
    assert resolved.half_lives_days == proposal.half_lives_days
    assert resolved.active_days_windows == proposal.active_days_windows
    assert "horizon 14 days" in note and "purchase-like" in note
    fixed = FeatureConfig(monetary_types=())
    assert resolve_feature_config(fixed, events, ["a"]) == (fixed, None)
    # the build resolves the same way (no horizon: 30 days assumed)
    spine = spine_at(events, "2024-05-01")
    built = build_features(events, spine, config, event_types=["a", "b"])
    again, _ = resolve_feature_config(config, events, ["a", "b"])
    expected = [f"a__count_{n}d" for n in again.windows_days]
    assert [c for c in feature_columns(built) if c.startswith("a__count_") and c[-1] == "d"] == expected
