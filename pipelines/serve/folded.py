"""The event mirror's old events, folded into a few numbers per contact and event type.

An event older than every window of the model (its longest count, active-day, momentum or trend
window) no longer counts in a window at any later ``as_of``; what the features still read of it
is its part in lifetime aggregates: the count per type, the first and last time, the decayed
sums, the repeat-purchase days of a monetary type, the latest event's account, and the accounts
a contact was ever active in. So the mirror keeps events inside the horizon (the longest window
plus a day, cut at a UTC midnight so that a calendar day is never split) and folds older ones
into :class:`Folded`: memory is then bounded by the events of the last horizon days, plus a
summary per contact with old events (measured in ``benchmarks/serve_bench.py``).

Decayed sums are kept relative to a reference time ``ref`` (at or after every folded event):
``sum 0.5 ** ((ref - ts) / half_life)``, times ``0.5 ** ((T - ref) / half_life)`` at ``as_of`` T,
which is the same sum to rounding (tested against the unfolded mirror for every contact).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from propensity.pipelines.serve.feature_plan import US_PER_DAY

__all__ = ["Folded", "horizon_days"]

# stats columns: count, first ts, last ts, then one decayed sum per half-life
_COUNT, _FIRST, _LAST, _DECAY = 0, 1, 2, 3


def horizon_days(config) -> int:
    """Days back past which an event counts in no window of ``config`` (a FeatureConfig)."""
    longest = max([*config.windows_days, 2 * config.momentum_days, *config.resolved_active_days_windows,
                   *(config.trend_windows or ())])
    return int(math.ceil(longest)) + 1


class Folded:
    """One contact's folded events: per type code, the count, first/last time and decayed sums."""

    __slots__ = ("account", "account_ts", "days", "ref", "stats")

    def __init__(self, n_codes: int, n_half_lives: int, ref: int) -> None:
        self.stats = np.zeros((n_codes, _DECAY + n_half_lives))
        self.stats[:, _FIRST] = np.inf
        self.stats[:, _LAST] = -np.inf
        self.ref = ref  # microseconds
        self.days: dict[int, dict[int, float]] | None = None  # monetary code -> UTC day -> value sum
        self.account: str | None = None  # of the latest folded event that had one
        self.account_ts = -math.inf

    def add(self, ts: int, code: int, value: float, account: str | None, *, half_lives: Sequence[float],
            weighted: bool, monetary: bool, ref: int) -> None:
        """Fold one event (``ts`` before ``ref``, the mirror's current cut)."""
        row = self.stats[code]
        if ref > self.ref:  # move the decay reference forward: every sum shrinks by the same factor
            for i, h in enumerate(half_lives):
                self.stats[:, _DECAY + i] *= 0.5 ** ((ref - self.ref) / US_PER_DAY / h)
            self.ref = ref
        row[_COUNT] += 1
        row[_FIRST] = min(row[_FIRST], ts)
        row[_LAST] = max(row[_LAST], ts)
        for i, h in enumerate(half_lives):
            factor = 0.5 ** ((self.ref - ts) / US_PER_DAY / h)
            if weighted:
                factor *= value
            if not math.isnan(factor):  # a NULL value adds nothing, as in the build
                row[_DECAY + i] += factor
        if monetary:
            if self.days is None:
                self.days = {}
            per_day = self.days.setdefault(code, {})
            day = ts // US_PER_DAY
            per_day[day] = per_day.get(day, 0.0) + (0.0 if math.isnan(value) else value)
        if account is not None and ts >= self.account_ts:
            self.account, self.account_ts = account, ts

    def decayed(self, T: int, half_lives: Sequence[float]) -> np.ndarray:
        """(codes, half-lives): the folded events' decayed sums at ``T``."""
        scale = np.array([0.5 ** ((T - self.ref) / US_PER_DAY / h) for h in half_lives])
        return self.stats[:, _DECAY:] * scale

    @property
    def count(self) -> np.ndarray:
        return self.stats[:, _COUNT]

    @property
    def first(self) -> np.ndarray:
        return self.stats[:, _FIRST]

    @property
    def last(self) -> np.ndarray:
        return self.stats[:, _LAST]
