"""The default data_end: the next midnight for an export of whole days, the minute after the latest
event for one cut short mid-day, decided from the days before by time of day."""

from __future__ import annotations

from datetime import datetime, timedelta

import ibis
import numpy as np
import pandas as pd

from propensity.pipelines.training.data_end import (
    CUT_SHORT_EVIDENCE,
    default_data_end,
    events_after_time_of_day,
    resolve_data_end,
)

DAY0 = datetime(2025, 3, 1)


def _events(stamps) -> ibis.Table:
    return ibis.memtable(pd.DataFrame({"contact_id": "c", "ts": pd.to_datetime(list(stamps))}))


def _hourly(days: int, hours=range(24), per_hour: int = 3, last_day_until: int | None = None):
    """``per_hour`` events in each of ``hours`` every day; the last day only before ``last_day_until``."""
    stamps = []
    for d in range(days):
        for h in hours:
            if d == days - 1 and last_day_until is not None and h >= last_day_until:
                continue
            stamps += [DAY0 + timedelta(days=d, hours=h, minutes=10 * k + 5) for k in range(per_hour)]
    return stamps


def _resolve(stamps) -> object:
    con = ibis.duckdb.connect()
    events = _events(stamps)
    outcomes = pd.DataFrame({"contact_id": ["c"], "ts": [pd.Timestamp(min(stamps))]})
    return resolve_data_end(con, events=events, outcomes=outcomes)


def test_an_export_cut_short_ends_the_minute_after_its_latest_event():
    stamps = _hourly(10, last_day_until=10)  # the last day stops after 09:25
    end = _resolve(stamps)
    assert max(stamps) == DAY0 + timedelta(days=9, hours=9, minutes=25)
    assert end.value == DAY0 + timedelta(days=9, hours=9, minutes=26)
    assert end.cut_short and end.expected_after == 14 * 3  # 14 later hours a day, 3 events each
    assert "looks cut short" in end.describe() and "42.0 events a day" in end.describe()


def test_whole_days_end_at_the_next_midnight():
    end = _resolve(_hourly(10))
    assert end.value == DAY0 + timedelta(days=10) and not end.cut_short
    assert "the midnight after" in end.describe()


def test_quiet_nights_are_not_mistaken_for_a_cut():
    """Activity only 08:00-18:59 every day: a whole last day ends at 18:55, as every day does."""
    end = _resolve(_hourly(10, hours=range(8, 19)))
    assert end.expected_after == 0 and end.value == DAY0 + timedelta(days=10)


def test_dates_without_a_time_of_day_end_at_the_next_midnight():
    stamps = [DAY0 + timedelta(days=d) for d in range(30) for _ in range(50)]
    end = _resolve(stamps)
    assert end.expected_after == 0 and end.value == DAY0 + timedelta(days=30)


def test_sparse_data_needs_more_than_chance_to_call_a_cut():
    """A few events a day at random times: the last one early in its day is not evidence enough."""
    rng = np.random.default_rng(0)
    stamps = [DAY0 + timedelta(days=d, seconds=int(s)) for d in range(20) for s in rng.uniform(0, 86_400, 3)]
    stamps = [s for s in stamps if s < DAY0 + timedelta(days=19, hours=6)]
    expected = events_after_time_of_day(_events(stamps), max(stamps), min(stamps))
    assert expected < CUT_SHORT_EVIDENCE
    assert default_data_end(max(stamps), expected) == DAY0 + timedelta(days=20)


def test_the_days_counted_start_with_the_data():
    """Two days of data: the expectation divides by the one earlier day, not by seven."""
    stamps = _hourly(2, last_day_until=12)
    assert events_after_time_of_day(_events(stamps), max(stamps), min(stamps)) == 12 * 3


def test_a_configured_data_end_wins_and_says_so():
    con = ibis.duckdb.connect()
    stamps = _hourly(10, last_day_until=10)
    end = resolve_data_end(con, datetime(2025, 3, 5), events=_events(stamps),
                           outcomes=pd.DataFrame({"contact_id": ["c"], "ts": [pd.Timestamp(DAY0)]}))
    assert end.value == datetime(2025, 3, 5) and "from the training config" in end.describe()
