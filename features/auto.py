"""Choices the feature config leaves to the data: windows, half-lives and purchase-like types.

``windows_days: auto`` and ``half_lives_days: auto`` are proposed by :func:`propose_windows`, a
pure function of the label horizon and the data's cadence (:func:`measure_cadence`, one small
Ibis query, so it runs on any backend). ``monetary_types: auto`` keeps the feature types whose
values are not all equal (:func:`discover_monetary_types`). :func:`resolve_feature_config`
applies all three and returns a config with nothing left on ``auto``: that resolved config is
what a trained model records, so scoring and the service compute the same columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import ibis

from propensity.features.config import FeatureConfig

__all__ = [
    "Cadence",
    "NICE_DAYS",
    "WindowProposal",
    "discover_monetary_types",
    "measure_cadence",
    "propose_windows",
    "resolve_feature_config",
]

# Windows people read at a glance; proposals snap to the nearest (on a log scale).
NICE_DAYS = (1, 2, 3, 7, 14, 21, 30, 60, 90, 120, 180, 270, 365, 540, 730)
# Without a horizon (a feature build outside training) the proposal assumes a month.
DEFAULT_HORIZON_DAYS = 30.0


@dataclass(frozen=True)
class Cadence:
    """How often contacts come back, and how much history there is.

    Attributes
    ----------
    gap_days : float
        Median over contacts (with two or more active days) of the mean gap between their
        active UTC days; NaN when no contact came back.
    span_days : float
        First to last event of the whole table, in days.
    """

    gap_days: float
    span_days: float


@dataclass(frozen=True)
class WindowProposal:
    """Windows and half-lives for one horizon and cadence, with the reason in one line."""

    windows_days: tuple[int, ...]
    half_lives_days: tuple[float, ...]
    active_days_windows: tuple[int, ...]
    reason: str


def _nice(days: float, cap: float = math.inf) -> int:
    """The nearest of NICE_DAYS on a log scale, not above ``cap`` (unless nothing is)."""
    choices = [c for c in NICE_DAYS if c <= cap] or [NICE_DAYS[0]]
    return min(choices, key=lambda c: abs(math.log(c) - math.log(max(days, 1.0))))


def propose_windows(horizon_days: float, gap_days: float, span_days: float) -> WindowProposal:
    """Candidate windows and half-lives scaled to the horizon and the cadence (pure).

    Windows: a short one around a few returns (at least a week at a 30-day horizon, at least
    the cadence), the horizon itself, and about three horizons of history (never more than
    the data's span). Half-lives: a short one of a few cadences, capped at a tenth of the
    horizon (signals that fade within days), a quarter, a half and the whole horizon. Active-day
    windows: the short window, twice it (a couple of weeks) and the horizon.

    Parameters
    ----------
    horizon_days : float
        The label horizon.
    gap_days : float
        The data's median gap between active days (NaN: unknown, a week is assumed).
    span_days : float
        The history available.

    Returns
    -------
    WindowProposal
    """
    if not horizon_days > 0:
        raise ValueError(f"horizon_days must be positive, got {horizon_days}")
    gap = 7.0 if math.isnan(gap_days) else max(gap_days, 0.5)
    span = max(span_days, 1.0)
    short = _nice(max(2 * gap, horizon_days / 4), span)
    middle = _nice(max(horizon_days, 2 * short), span)
    long = _nice(max(3 * horizon_days, 2 * middle), span)
    windows = tuple(sorted({short, middle, long}))
    quick = min(max(gap, 1.0), max(horizon_days / 10, 1.0))
    half_lives = tuple(sorted({float(_nice(quick, horizon_days / 10)), float(_nice(horizon_days / 4)),
                               float(_nice(horizon_days / 2)), float(_nice(horizon_days))}))
    active = tuple(sorted({short, _nice(2 * short, span), middle}))
    cadence = "unknown (a week assumed)" if math.isnan(gap_days) else f"{gap_days:.1f} days"
    reason = (f"horizon {horizon_days:g} days, median gap between active days {cadence}, "
              f"{span_days:.0f} days of history")
    return WindowProposal(windows, half_lives, active, reason)


def measure_cadence(events: ibis.Table) -> Cadence:
    """The data's cadence (:class:`Cadence`) in one query over ``events``."""
    days = events.select(contact_id=events.contact_id, day=events.ts.date()).distinct()
    per = days.group_by("contact_id").aggregate(first=days.day.min(), last=days.day.max(), n=days.count())
    per = per.filter(per.n > 1)
    gap = (per["last"].delta(per["first"], unit="day").cast("float64") / (per.n - 1).cast("float64"))
    # exact: approximate medians differ by engine (DuckDB's t-digest, Spark's, PostgreSQL has
    # none), and the proposal must not; one row per contact, so exact is cheap
    stats = per.aggregate(gap=gap.median()).execute()
    span = events.aggregate(lo=events.ts.min(), hi=events.ts.max()).execute()
    value = stats["gap"].iloc[0] if len(stats) else None
    lo, hi = span["lo"].iloc[0], span["hi"].iloc[0]
    span_days = 0.0 if lo is None or hi is None or lo != lo else (hi - lo).total_seconds() / 86_400
    return Cadence(float("nan") if value is None or value != value else float(value), float(span_days))


def discover_monetary_types(events: ibis.Table, event_types: Sequence[str]) -> tuple[str, ...]:
    """The ``event_types`` whose non-NULL values are not all equal (purchases, not clicks).

    A type whose every value is the same (1 per event, or NULL) carries no amount: its
    "value" would only repeat its count.
    """
    if not event_types:
        return ()
    mine = events.filter(events.event_type.isin(list(event_types)) & events.value.notnull())
    spread = mine.group_by("event_type").aggregate(lo=mine.value.min(), hi=mine.value.max()).execute()
    return tuple(sorted(str(t) for t, lo, hi in spread.itertuples(index=False) if hi > lo))


def resolve_feature_config(
    config: FeatureConfig,
    events: ibis.Table,
    event_types: Sequence[str],
    *,
    horizon_days: float | None = None,
) -> tuple[FeatureConfig, str | None]:
    """``config`` with every ``auto`` replaced by what the data gives.

    Parameters
    ----------
    config : FeatureConfig
    events : ibis.Table
        Canonical events (the cadence is measured on all of them: a cut-off's features never
        read it, only the choice of windows does, as a person choosing them would).
    event_types : sequence of str
        The feature types (monetary types are chosen among them).
    horizon_days : float, optional
        The label horizon; without it (a build outside training) 30 days are assumed.

    Returns
    -------
    (FeatureConfig, str or None)
        The resolved config and a one-line note of what was chosen and why (None when
        nothing was on ``auto``).
    """
    if config.is_resolved:
        return config, None
    update: dict = {}
    notes = []
    if "auto" in (config.windows_days, config.half_lives_days):
        horizon = DEFAULT_HORIZON_DAYS if horizon_days is None else float(horizon_days)
        cadence = measure_cadence(events)
        proposal = propose_windows(horizon, cadence.gap_days, cadence.span_days)
        if config.windows_days == "auto":
            update["windows_days"] = proposal.windows_days
            if config.active_days_windows is None:
                update["active_days_windows"] = proposal.active_days_windows
        if config.half_lives_days == "auto":
            update["half_lives_days"] = proposal.half_lives_days
        assumed = " (no horizon given: 30 days assumed)" if horizon_days is None else ""
        notes.append(
            f"windows {list(update.get('windows_days', config.windows_days))}, half-lives "
            f"{[f'{h:g}' for h in update.get('half_lives_days', config.half_lives_days)]}, active-day windows "
            f"{list(update.get('active_days_windows', config.active_days_windows) or [])} from the data: "
            f"{proposal.reason}{assumed}"
        )
    if config.monetary_types == "auto":
        update["monetary_types"] = discover_monetary_types(events, event_types)
        notes.append(f"purchase-like types (values that vary): {list(update['monetary_types']) or 'none'}")
    return config.model_copy(update=update), "; ".join(notes)
