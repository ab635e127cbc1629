"""Where the observed data ends: the instant every label window must close by.

An export of whole days ends at the midnight after its latest event. An export that stopped in
the middle of a day (a nightly job at 09:30, a snapshot taken at lunch) does not: taking the next
midnight would count the unobserved rest of that day as "no conversion" in the last label window,
so the test cut-off's positives would be silently short. Which of the two a file is cannot be
read from its latest timestamp alone, so the default compares the last day with the days before
it, by time of day: if on the days before, events kept coming after the latest event's time of
day (:data:`CUT_SHORT_EVIDENCE` or more a day, which would all be missing by chance with
probability below e^-10), the export was cut short there and ``data_end`` is the minute after the
latest event; otherwise it is the next midnight. Either way ``describe()`` says which and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import ibis
import pandas as pd

__all__ = ["CUT_SHORT_EVIDENCE", "DataEnd", "default_data_end", "events_after_time_of_day", "resolve_data_end"]

CUT_SHORT_EVIDENCE = 10.0
"""Events a day expected after the latest time of day before the last day counts as cut short."""

LOOKBACK_DAYS = 7
"""Days before the last one whose events after that time of day give the expectation."""


@dataclass(frozen=True)
class DataEnd:
    """The end of observed data, and where it came from.

    Attributes
    ----------
    value : datetime
        Label windows must close by this instant.
    source : str
        ``"config"`` (``data_end`` was given) or ``"default"``.
    latest : datetime, optional
        The latest event or outcome timestamp (what the default is computed from).
    start : datetime, optional
        The earliest event timestamp (how far back a grid can start).
    expected_after : float, optional
        Events a day that came later in the day than ``latest``'s time of day on the days before
        (:func:`events_after_time_of_day`); what decided between midnight and the latest instant.
    """

    value: datetime
    source: str = "config"
    latest: datetime | None = None
    start: datetime | None = None
    expected_after: float | None = None

    @property
    def cut_short(self) -> bool:
        """The default took the data as cut off mid-day (``value`` is not the next midnight)."""
        return self.source == "default" and _is_cut_short(self.expected_after)

    def describe(self) -> str:
        """``data_end`` in words, with the rule that chose it."""
        if self.source == "default" and self.latest is not None:
            if self.cut_short:
                return (f"data_end {self.value:%Y-%m-%d %H:%M} (default: the data looks cut short at its latest event "
                        f"or outcome, {self.latest:%Y-%m-%d %H:%M:%S}: on the {LOOKBACK_DAYS} days before, "
                        f"{self.expected_after:,.1f} events a day came later in the day than that; set data_end in "
                        f"the train config if the data holds whole days)")
            return (f"data_end {self.value:%Y-%m-%d %H:%M} (default: the midnight after the day of the latest "
                    f"event or outcome, {self.latest:%Y-%m-%d %H:%M:%S}, an export of whole days)")
        return f"data_end {self.value:%Y-%m-%d %H:%M} (from the training config)"


def _is_cut_short(expected_after: float | None) -> bool:
    return expected_after is not None and expected_after >= CUT_SHORT_EVIDENCE


def default_data_end(latest: datetime, expected_after: float | None = None) -> datetime:
    """The midnight after the day of ``latest``, unless the day was cut short (module docstring).

    ``expected_after``: :func:`events_after_time_of_day` for ``latest`` (None: not measured, the
    midnight). Cut short, the minute after ``latest``, so the latest event itself counts
    (``ts < data_end``). The midnight rather than ``latest`` for whole days: using ``latest`` would
    drop a label window that closes at that midnight, seconds after the last event.
    """
    stamp = pd.Timestamp(latest)
    if _is_cut_short(expected_after):
        return (stamp.floor("min") + pd.Timedelta(minutes=1)).to_pydatetime()
    return stamp.normalize().to_pydatetime() + timedelta(days=1)


def events_after_time_of_day(events: ibis.Table, latest: datetime, start: datetime | None = None) -> float:
    """Events a day, on the :data:`LOOKBACK_DAYS` days before ``latest``'s day (from ``start``'s day
    on), that came later in their day than ``latest``'s time of day.

    Plain timestamp ranges, one per day, so every engine runs it as it runs a filter.
    """
    stamp = pd.Timestamp(latest)
    day = stamp.normalize()
    first = pd.Timestamp(start).normalize() if start is not None else day - pd.Timedelta(days=LOOKBACK_DAYS)
    days = [day - pd.Timedelta(days=k) for k in range(1, LOOKBACK_DAYS + 1) if day - pd.Timedelta(days=k) >= first]
    if not days:
        return 0.0
    ranges = [(events.ts > (d + (stamp - day)).to_pydatetime()) & (events.ts < (d + pd.Timedelta(days=1)).to_pydatetime())
              for d in days]
    later = ranges[0]
    for extra in ranges[1:]:
        later = later | extra
    count = events.filter(later).count().execute()
    return float(count) / len(days)


def resolve_data_end(con: ibis.BaseBackend, configured: datetime | None = None, *,
                     events: ibis.Table | None = None, outcomes: pd.DataFrame | None = None) -> DataEnd:
    """``configured`` when given, else :func:`default_data_end` of the latest event or outcome.

    ``events`` and ``outcomes`` (both): read those instead of ``con``'s tables named so (a
    warehouse's tables may have other names).
    """
    if events is None or outcomes is None:
        events = con.table("events")
        latest, start = _observed_span(con)
    else:
        latest, start = _span_of(events, outcomes)
    if configured is not None:
        return DataEnd(value=pd.Timestamp(configured).to_pydatetime(), source="config", latest=latest, start=start)
    if latest is None:
        raise ValueError("no events or outcomes to train on: ingest them first")
    expected = events_after_time_of_day(events, latest, start)
    return DataEnd(value=default_data_end(latest, expected), source="default", latest=latest, start=start,
                   expected_after=expected)


def _observed_span(con: ibis.BaseBackend) -> tuple[datetime | None, datetime | None]:
    ends, starts = [], []
    for name in ("events", "outcomes"):
        table = con.table(name)
        for stamps, value in ((ends, table.ts.max().execute()), (starts, table.ts.min().execute())):
            if value is not None and not pd.isna(value):
                stamps.append(pd.Timestamp(value))
    return (max(ends).to_pydatetime() if ends else None, min(starts).to_pydatetime() if starts else None)


def _span_of(events: ibis.Table, outcomes: pd.DataFrame) -> tuple[datetime | None, datetime | None]:
    span = events.aggregate(latest=events.ts.max(), start=events.ts.min()).execute().iloc[0]
    ends = [pd.Timestamp(v) for v in (span["latest"], outcomes["ts"].max()) if not pd.isna(v)]
    starts = [pd.Timestamp(v) for v in (span["start"], outcomes["ts"].min()) if not pd.isna(v)]
    return (max(ends).to_pydatetime() if ends else None, min(starts).to_pydatetime() if starts else None)
