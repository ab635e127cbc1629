"""Labels for a spine: did the contact convert in ``[as_of, as_of + horizon)``?

Kept apart from features (Feast's rule): features never see outcomes, labels never see events.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

__all__ = ["cutoff_grid", "label_spine", "qualifying_outcomes"]


def cutoff_grid(first: datetime, last: datetime, step_days: int) -> list[datetime]:
    """Cut-offs ``first, first + step, ...`` up to and including ``last``."""
    if step_days <= 0:
        raise ValueError("step_days must be positive")
    if last < first:
        raise ValueError(f"the last cut-off {last:%Y-%m-%d} is before the first {first:%Y-%m-%d}")
    cuts, current = [], first
    while current <= last:
        cuts.append(current)
        current += timedelta(days=step_days)
    return cuts


def label_spine(
    spine: pd.DataFrame,
    outcomes: pd.DataFrame,
    horizon_days: float,
    *,
    data_end: datetime,
    recurring: bool = False,
    qualifying: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Attach ``label`` to spine rows and drop the rows that cannot be labelled honestly.

    Parameters
    ----------
    spine : DataFrame
        ``contact_id, as_of`` (one row per snapshot).
    outcomes : DataFrame
        ``contact_id, ts`` (+ ``outcome``).
    horizon_days : float
        Label window length: an outcome counts when ``as_of <= ts < as_of + horizon``.
    data_end : datetime
        The end of observed data. Rows whose window runs past it are dropped, not counted as
        negatives (we cannot know yet).
    recurring : bool
        False (one-time conversions): label = the contact's *first* qualifying outcome falls in the
        window, and contacts that converted before ``as_of`` are dropped. True (renewals, repeat
        purchases): label = any qualifying outcome in the window; nobody is dropped for history.
    qualifying : sequence of str, optional
        Outcome values that count (``outcome`` column); None counts every outcome.

    Returns
    -------
    DataFrame
        The kept spine rows (original order) with ``label`` (int64, 0/1) and ``label_end``.
    """
    horizon = pd.Timedelta(days=horizon_days)
    frame = spine[["contact_id", "as_of"]].copy()
    frame["as_of"] = pd.to_datetime(frame["as_of"]).astype("datetime64[us]")
    frame["label_end"] = frame["as_of"] + horizon
    frame = frame[frame["label_end"] <= pd.Timestamp(data_end)]

    hits = qualifying_outcomes(outcomes, qualifying)

    if not recurring:
        first = hits.groupby("contact_id", as_index=False)["ts"].min().rename(columns={"ts": "first_ts"})
        frame = frame.merge(first, on="contact_id", how="left")
        already = frame["first_ts"] < frame["as_of"]
        frame = frame[~already.fillna(False).to_numpy(dtype=bool)]
        in_window = (frame["first_ts"] >= frame["as_of"]) & (frame["first_ts"] < frame["label_end"])
        frame["label"] = in_window.fillna(False).astype("int64")
        return frame.drop(columns="first_ts").reset_index(drop=True)

    rows = frame.reset_index(drop=True).reset_index(names="_row")
    pairs = rows.merge(hits, on="contact_id", how="inner")
    inside = pairs[(pairs["ts"] >= pairs["as_of"]) & (pairs["ts"] < pairs["label_end"])]
    rows["label"] = np.isin(rows["_row"], inside["_row"].unique()).astype("int64")
    return rows.drop(columns="_row")


def qualifying_outcomes(outcomes: pd.DataFrame, qualifying: Sequence[str] | None = None) -> pd.DataFrame:
    """The outcomes that count as a conversion: ``contact_id, ts`` (``ts`` as ``datetime64[us]``).

    Parameters
    ----------
    outcomes : DataFrame
        ``contact_id, ts`` (+ ``outcome``).
    qualifying : sequence of str, optional
        Outcome values that count (``outcome`` column); None counts every outcome.
    """
    hits = outcomes[["contact_id", "ts"] + (["outcome"] if "outcome" in outcomes else [])]
    if qualifying is not None:
        if "outcome" not in hits:
            raise ValueError("qualifying outcomes were given but the outcomes have no `outcome` column")
        hits = hits[hits["outcome"].isin(list(qualifying))]
    return hits[["contact_id", "ts"]].assign(ts=lambda d: pd.to_datetime(d["ts"]).astype("datetime64[us]"))
