"""Spines: the (contact_id, as_of) rows a feature table is computed for.

A contact is *known* at ``as_of`` when it has an event with ``ts < as_of`` or is in the
contacts table with ``created_at`` NULL or ``< as_of``. Every spine has exactly the columns
``contact_id VARCHAR`` and ``as_of TIMESTAMP`` (naive UTC) and no duplicate rows.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta

import ibis
import ibis.expr.datatypes as dt
import pandas as pd

__all__ = [
    "SPINE_COLUMNS",
    "TIMESTAMP_US",
    "spine_at",
    "spine_from_frame",
    "spine_grid",
    "to_utc_naive",
]

SPINE_COLUMNS = ("contact_id", "as_of")
# DuckDB's TIMESTAMP: naive, microseconds. Casting to one type keeps unions and joins legal
# whatever precision a source frame had (pandas nanoseconds, Parquet milliseconds, ...).
TIMESTAMP_US = dt.Timestamp(scale=6)


def to_utc_naive(value: datetime | date | str | pd.Timestamp) -> datetime:
    """Turn a cut-off into a naive UTC ``datetime`` (a date means midnight UTC).

    Parameters
    ----------
    value : datetime, date, str or pandas.Timestamp
        Aware values are converted to UTC; naive ones are taken as UTC already.

    Returns
    -------
    datetime
        Naive, microsecond precision.
    """
    if isinstance(value, str):
        value = pd.Timestamp(value)
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):  # pd.Timestamp is a datetime subclass
        raise TypeError(f"as_of must be a datetime, date or ISO string, not {type(value).__name__}")
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    # Our timestamps are microseconds; nanoseconds would silently disagree with stored events.
    return stamp.floor("us").to_pydatetime()


def _first_seen(events: ibis.Table, contacts: ibis.Table | None) -> ibis.Table:
    """(contact_id, first_seen): earliest event, and created_at (NULL = always known)."""
    first = events.group_by(contact_id=events.contact_id.cast("string")).aggregate(
        first_seen=events.ts.min().cast(TIMESTAMP_US)
    )
    if contacts is None:
        return first
    created = contacts.select(
        contact_id=contacts.contact_id.cast("string"),
        first_seen=contacts.created_at.cast(TIMESTAMP_US),
    )
    return first.union(created, distinct=False)


def spine_at(
    events: ibis.Table,
    as_of: datetime | date | str,
    contacts: ibis.Table | None = None,
) -> ibis.Table:
    """Every contact known at ``as_of``, one row each.

    Parameters
    ----------
    events : ibis.Table
        Canonical events (``contact_id``, ``ts``, ...).
    as_of : datetime, date or str
        The cut-off instant (a date means midnight UTC).
    contacts : ibis.Table, optional
        Canonical contacts; adds contacts without events created before ``as_of`` (or with
        unknown ``created_at``).

    Returns
    -------
    ibis.Table
        Lazy ``(contact_id, as_of)``.
    """
    cutoff = ibis.literal(to_utc_naive(as_of), type=TIMESTAMP_US)
    seen = _first_seen(events, contacts)
    known = seen.filter(seen.first_seen.isnull() | (seen.first_seen < cutoff))
    return known.select("contact_id").distinct().mutate(as_of=cutoff)


def _grid(first: datetime, last: datetime, step_days: float) -> list[datetime]:
    if not step_days > 0:
        raise ValueError(f"step_days must be positive, got {step_days}")
    if last < first:
        raise ValueError(f"last ({last}) is before first ({first})")
    step = timedelta(days=step_days)
    count = (last - first) // step + 1  # timedelta // timedelta: exact, in microseconds
    return [first + k * step for k in range(count)]


def spine_grid(
    events: ibis.Table,
    first: datetime | date | str,
    last: datetime | date | str,
    step_days: float,
    contacts: ibis.Table | None = None,
) -> ibis.Table:
    """The union of :func:`spine_at` over ``first, first + step, ...`` up to ``last``.

    Parameters
    ----------
    events : ibis.Table
        Canonical events.
    first, last : datetime, date or str
        First and last cut-off (``last`` is included when it falls on the grid).
    step_days : float
        Distance between cut-offs in days.
    contacts : ibis.Table, optional
        Canonical contacts, as in :func:`spine_at`.

    Returns
    -------
    ibis.Table
        Lazy ``(contact_id, as_of)``.
    """
    cutoffs = _grid(to_utc_naive(first), to_utc_naive(last), step_days)
    grid = ibis.memtable(
        pd.DataFrame({"as_of": pd.Series(cutoffs, dtype="datetime64[us]")}),
        schema={"as_of": TIMESTAMP_US},
    )
    seen = _first_seen(events, contacts)
    # One inequality join instead of a union of len(cutoffs) scans over the events.
    pairs = seen.join(grid, seen.first_seen.isnull() | (seen.first_seen < grid.as_of))
    return pairs.select("contact_id", "as_of").distinct()


def _validate_frame(frame: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in SPINE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"a spine needs columns {list(SPINE_COLUMNS)}; missing {missing}")
    out = frame.loc[:, list(SPINE_COLUMNS)].copy()
    if out["contact_id"].isna().any():
        raise ValueError("spine contact_id must not be null")
    # Text must be ISO 8601 (as written by our own tools); guessing formats invites day/month
    # swaps that would move cut-offs silently.
    fmt = "ISO8601" if pd.api.types.is_string_dtype(out["as_of"]) else None
    try:
        as_of = pd.to_datetime(out["as_of"], utc=True, format=fmt)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"spine as_of must be timestamps: {exc}") from exc
    if as_of.isna().any():
        raise ValueError("spine as_of must not be null")
    # Naive values are taken as UTC (utc=True localizes them); aware ones are converted.
    out["as_of"] = as_of.dt.tz_localize(None).dt.floor("us").astype("datetime64[us]")
    out["contact_id"] = out["contact_id"].astype(str)
    return out.drop_duplicates(ignore_index=True)


def spine_from_frame(con: ibis.BaseBackend, frame: pd.DataFrame) -> ibis.Table:
    """A spine from a pandas frame with columns ``contact_id`` and ``as_of``.

    Parameters
    ----------
    con : ibis.BaseBackend
        The backend the events live in; the spine is loaded there as a temporary table so
        it can be joined without moving the events.
    frame : pandas.DataFrame
        ``contact_id`` (cast to string) and ``as_of`` (naive = UTC, aware = converted);
        other columns are ignored and duplicate rows dropped.

    Returns
    -------
    ibis.Table
        ``(contact_id, as_of)``.

    Raises
    ------
    ValueError
        If a column is missing, null or ``as_of`` does not parse as timestamps.
    """
    clean = _validate_frame(frame)
    name = f"_spine_{uuid.uuid4().hex[:12]}"
    return con.create_table(
        name, clean, schema=ibis.schema({"contact_id": "string", "as_of": TIMESTAMP_US}), temp=True
    )
