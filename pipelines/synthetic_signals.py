"""A second synthetic world for measurement: conversion driven by short-lived signals.

``propensity.pipelines.synthetic`` draws conversions from a decayed engagement with a 14-day
half-life. This world is built on another mechanism, so that a model (or a feature set) tuned on
the first is checked on something it was not built on. It is a B2B product-led funnel with its own
event names; the daily conversion hazard of a contact reads only what happened on earlier days:

- ``pricing_page`` visits, decayed with a 3-day half-life, saturating;
- ``report_run`` use decayed with a 2-day half-life (log-saturating);
- the number of distinct days with an ``app_login`` in the last 14 days, saturating;
- ``seat_added`` in the last 30 days, saturating, but only for large companies (a fit
  interaction: a seat at a 5-person shop says little);
- ``integration_connected`` ever (a lifetime flag) and the number of distinct days with a
  ``credits_bought`` purchase (repeat purchase days, saturating);
- fit: company size, segment and role.

Activity comes from a hidden two-state process per contact (browsing / evaluating, entered at a
personal rate, left after about a week), times a personal activity level; ``newsletter_open``,
``blog_visit`` and ``support_chat`` follow other latent levels and carry no signal. Each contact
converts at most once (``outcomes``: one row, the first conversion).

:func:`signal_true_probability` is the oracle ``P(convert in [as_of, as_of + horizon) | history,
hidden state)``: the first day is exact, later days are simulated from the hidden state at
``as_of`` (Monte Carlo over event paths, exact survival per path, as the first world's oracle).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["SIGNAL_EVENT_TYPES", "SignalWorld", "SignalWorldConfig", "generate_signal_world",
           "signal_true_probability"]

_DAY_US = 86_400_000_000
# type, base daily rate, factor while evaluating
_TYPES = (
    ("app_login", 0.30, 4.0),
    ("report_run", 0.08, 5.0),
    ("pricing_page", 0.012, 12.0),
    ("docs_read", 0.05, 3.0),
    ("seat_added", 0.006, 6.0),
    ("integration_connected", 0.002, 5.0),
    ("credits_bought", 0.005, 3.0),
    ("newsletter_open", 0.15, 1.0),
    ("blog_visit", 0.08, 1.0),
    ("support_chat", 0.02, 1.5),
)
SIGNAL_EVENT_TYPES = tuple(t for t, _, _ in _TYPES)
_K = {name: k for k, name in enumerate(SIGNAL_EVENT_TYPES)}
_BASE = np.array([r for _, r, _ in _TYPES])
_BOOST = np.array([b for _, _, b in _TYPES])
_NOISE = np.isin(SIGNAL_EVENT_TYPES, ("newsletter_open", "blog_visit", "support_chat"))
_PRICING_DECAY = 0.5 ** (1 / 3.0)
_REPORT_DECAY = 0.5 ** (1 / 2.0)
_SEGMENTS = {"fintech": 0.35, "software": 0.25, "retail": -0.2, "education": -0.4, "health": 0.0}
_ROLES = {"engineer": 0.1, "executive": 0.4, "operations": 0.0, "student": -0.8}
_SEGMENT_SHARE = (0.2, 0.3, 0.2, 0.15, 0.15)
_ROLE_SHARE = (0.4, 0.15, 0.3, 0.15)
_ENTER, _LEAVE = 0.012, 0.13  # evaluating: entered per day x personal rate, left after ~a week


@dataclass(frozen=True)
class SignalWorldConfig:
    """Size, seed and intercept of the signal world (``days`` from ``start``, midnight UTC)."""

    contacts: int = 20_000
    days: int = 180
    seed: int = 0
    start: dt.date = dt.date(2025, 1, 1)
    baseline_logit: float = -9.9
    day_zero_share: float = 0.3  # contacts that exist from the first day

    def __post_init__(self) -> None:
        if self.contacts < 1 or self.days < 2:
            raise ValueError("contacts must be at least 1 and days at least 2")


@dataclass(frozen=True, eq=False)
class SignalWorld:
    """Observable tables (as :class:`propensity.pipelines.synthetic.World`) plus the hidden state.

    ``counts`` is ``(days, contacts, types)`` events per day, ``evaluating`` ``(days, contacts)``
    the hidden state, ``latent`` per contact (``activity``, ``noise``, ``enter_rate``,
    ``fit_logit``, ``big``, ``created_day``, ``converted_day``).
    """

    events: pd.DataFrame
    contacts: pd.DataFrame
    outcomes: pd.DataFrame
    config: SignalWorldConfig
    latent: pd.DataFrame
    counts: np.ndarray
    evaluating: np.ndarray


class _State:
    """What the hazard reads, for any leading shape (contacts, or simulations x contacts)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.pricing = np.zeros(shape)
        self.report = np.zeros(shape)
        self.logins = np.zeros((14, *shape), dtype=bool)  # ring of the last 14 days
        self.seats = np.zeros((30, *shape), dtype=np.int16)  # ring of the last 30 days
        self.integrated = np.zeros(shape, dtype=bool)
        self.credit_days = np.zeros(shape, dtype=np.int16)
        self.day = 0

    def copy_to(self, shape: tuple[int, ...]) -> _State:
        out = _State(shape)
        for name in ("pricing", "report", "integrated", "credit_days"):
            setattr(out, name, np.broadcast_to(getattr(self, name), shape).copy())
        for name in ("logins", "seats"):  # rings: (days, *shape), new leading axes after the first
            ring = getattr(self, name)
            extra = (1,) * (len(shape) - ring.ndim + 1)
            setattr(out, name, np.broadcast_to(ring.reshape(ring.shape[0], *extra, *ring.shape[1:]),
                                               getattr(out, name).shape).copy())
        out.day = self.day
        return out

    def add_day(self, counts: np.ndarray) -> None:
        """Fold in one day's counts (``(..., types)``); the next hazard sees them."""
        self.pricing = self.pricing * _PRICING_DECAY + counts[..., _K["pricing_page"]]
        self.report = self.report * _REPORT_DECAY + counts[..., _K["report_run"]]
        self.logins[self.day % 14] = counts[..., _K["app_login"]] > 0
        self.seats[self.day % 30] = counts[..., _K["seat_added"]]
        self.integrated |= counts[..., _K["integration_connected"]] > 0
        self.credit_days += counts[..., _K["credits_bought"]] > 0
        self.day += 1

    def hazard(self, fit_logit: np.ndarray, big: np.ndarray, b0: float) -> np.ndarray:
        logit = (
            b0 + fit_logit
            + 2.4 * (1 - np.exp(-self.pricing / 1.5))
            + 0.7 * np.log1p(self.report)
            + 2.4 * (1 - np.exp(-self.logins.sum(axis=0) / 5.0))
            + 2.0 * big * (1 - np.exp(-self.seats.sum(axis=0) / 2.0))
            + 1.2 * self.integrated
            + 0.9 * (1 - np.exp(-self.credit_days / 2.0))
        )
        return 1.0 / (1.0 + np.exp(-logit))


def _rates(latent: pd.DataFrame) -> np.ndarray:
    """Daily rate per contact and type outside evaluating, ``(contacts, types)``."""
    level = np.where(_NOISE, latent["noise"].to_numpy()[:, None], latent["activity"].to_numpy()[:, None])
    rates = _BASE * level
    rates[:, _K["seat_added"]] *= 0.3 + 1.4 * latent["big"].to_numpy()  # big companies add more seats
    return rates


def _draw_day(rng, rates: np.ndarray, evaluating: np.ndarray, active: np.ndarray, weekday: int) -> np.ndarray:
    factor = np.where(evaluating[..., None], _BOOST, 1.0) * (0.5 if weekday >= 5 else 1.0)
    return rng.poisson(rates * factor * active[..., None]).astype(np.int16)


def generate_signal_world(config: SignalWorldConfig = SignalWorldConfig()) -> SignalWorld:
    """Draw a world (about 40 events per contact over 180 days)."""
    rng = np.random.default_rng([config.seed, 0x5161])
    n, days = config.contacts, config.days
    size = np.exp(rng.normal(np.log(60), 1.3, n)).round().clip(1, 50_000).astype(np.int64)
    segment = rng.choice(list(_SEGMENTS), n, p=_SEGMENT_SHARE)
    role = rng.choice(list(_ROLES), n, p=_ROLE_SHARE)
    big = 1 / (1 + np.exp(-(np.log(size) - np.log(200)) * 2))
    fit = 1.5 * (0.3 * np.clip(np.log(size / 60), -2, 3) + np.vectorize(_SEGMENTS.get)(segment)
                 + np.vectorize(_ROLES.get)(role))
    created = np.where(rng.random(n) < config.day_zero_share, -1, rng.integers(0, days - 30, n))
    latent = pd.DataFrame({
        "activity": rng.gamma(1.2, 1 / 1.2, n), "noise": rng.gamma(1.5, 1 / 1.5, n),
        "enter_rate": rng.gamma(1.0, 1.0, n) * np.exp(0.5 * fit), "fit_logit": fit, "big": big,
        "created_day": created,
    })
    rates = _rates(latent)
    state = _State((n,))
    evaluating = np.zeros((days, n), dtype=bool)
    counts = np.zeros((days, n, len(_TYPES)), dtype=np.int16)
    converted = np.full(n, -1)
    s = rng.random(n) < 0.05
    for day in range(days):
        active = created < day  # a contact acts from the day after it was created
        hazard = state.hazard(fit, big, config.baseline_logit)
        new = active & (converted < 0) & (rng.random(n) < hazard)
        converted[new] = day
        evaluating[day] = s
        weekday = (config.start + dt.timedelta(days=day)).weekday()
        counts[day] = _draw_day(rng, rates, s, active, weekday)
        state.add_day(counts[day])
        s = np.where(s, rng.random(n) >= _LEAVE, rng.random(n) < _ENTER * latent["enter_rate"].to_numpy())
    latent["converted_day"] = converted
    return SignalWorld(*_tables(rng, config, counts, created, converted, size, segment, role),
                       config=config, latent=latent, counts=counts, evaluating=evaluating)


def _tables(rng, config: SignalWorldConfig, counts, created, converted, size, segment, role):
    n = config.contacts
    ids = np.array([f"s{i:06d}" for i in range(n)], dtype=object)
    accounts = np.array([f"sa{i:05d}" for i in rng.integers(0, max(1, n // 4), n)], dtype=object)
    start = pd.Timestamp(config.start)
    day, contact, kind = np.nonzero(counts)
    reps = counts[day, contact, kind].astype(np.int64)
    day, contact, kind = np.repeat(day, reps), np.repeat(contact, reps), np.repeat(kind, reps)
    ts_us = (day * _DAY_US + rng.integers(0, _DAY_US, len(day))).astype(np.int64)
    order = np.lexsort((ts_us, contact))
    day, contact, kind, ts_us = day[order], contact[order], kind[order], ts_us[order]
    value = np.ones(len(day))
    buys = kind == _K["credits_bought"]
    value[buys] = np.round(np.exp(rng.normal(np.log(40 * (size[contact[buys]] / 60) ** 0.3), 0.6)), 2)
    events = pd.DataFrame({
        "event_id": [f"se{i:08d}" for i in range(len(day))],
        "contact_id": ids[contact].astype(str),
        "event_type": np.array(SIGNAL_EVENT_TYPES, dtype=object)[kind].astype(str),
        "ts": (start + pd.to_timedelta(ts_us, unit="us")).astype("datetime64[us]"),
        "value": value,
        "account_id": accounts[contact].astype(str),
        "properties": pd.Series([None] * len(day), dtype="str"),
    })
    created_us = np.where(created < 0, -_DAY_US * 30, created * _DAY_US + rng.integers(0, _DAY_US // 2, n))
    contacts = pd.DataFrame({
        "contact_id": ids.astype(str), "account_id": accounts.astype(str),
        "created_at": (start + pd.to_timedelta(created_us, unit="us")).astype("datetime64[us]"),
        "company_size": size, "segment": segment.astype(str), "role": role.astype(str),
    })
    who = np.flatnonzero(converted >= 0)
    outcome_us = converted[who] * _DAY_US + rng.integers(0, _DAY_US, len(who))
    outcomes = pd.DataFrame({
        "outcome_id": [f"so{i:06d}" for i in who], "contact_id": ids[who].astype(str),
        "ts": (start + pd.to_timedelta(outcome_us, unit="us")).astype("datetime64[us]"),
        "outcome": "converted", "value": 1.0,
    })
    return events, contacts, outcomes


def signal_true_probability(world: SignalWorld, as_of: object, horizon_days: int = 30,
                            n_simulations: int = 64) -> pd.DataFrame:
    """Oracle ``P(first conversion in [as_of, as_of + horizon))`` per eligible contact.

    Eligible: created before ``as_of`` and not converted before it. ``as_of`` must be a midnight
    inside the period; the window is cut at its end. Returns ``contact_id, as_of,
    true_probability``.
    """
    cfg = world.config
    stamp = pd.Timestamp(as_of)
    t0 = (stamp - pd.Timestamp(cfg.start)) / pd.Timedelta(days=1)
    if stamp != stamp.normalize() or not 0 < t0 < cfg.days:
        raise ValueError(f"as_of must be a midnight inside the world's {cfg.days} days, got {as_of}")
    t0 = int(t0)
    latent = world.latent
    created, converted = latent["created_day"].to_numpy(), latent["converted_day"].to_numpy()
    keep = (created < t0) & ~((converted >= 0) & (converted < t0))
    fit, big = latent["fit_logit"].to_numpy()[keep], latent["big"].to_numpy()[keep]
    rates = _rates(latent)[keep]
    enter = _ENTER * latent["enter_rate"].to_numpy()[keep]
    state = _State((int(keep.sum()),))
    for day in range(t0):
        state.add_day(world.counts[day][keep])
    rng = np.random.default_rng([cfg.seed, t0, horizon_days, 0x7A0])
    sims = state.copy_to((n_simulations, int(keep.sum())))
    s = np.broadcast_to(world.evaluating[t0][keep], sims.pricing.shape).copy()
    survival = np.ones(sims.pricing.shape)
    active = np.ones(sims.pricing.shape, dtype=bool)
    for day in range(t0, min(t0 + horizon_days, cfg.days)):
        survival *= 1 - sims.hazard(fit, big, cfg.baseline_logit)
        weekday = (cfg.start + dt.timedelta(days=day)).weekday()
        sims.add_day(_draw_day(rng, rates, s, active, weekday))
        s = np.where(s, rng.random(s.shape) >= _LEAVE, rng.random(s.shape) < enter)
    ids = np.array([f"s{i:06d}" for i in np.flatnonzero(keep)])
    return pd.DataFrame({"contact_id": ids, "as_of": stamp.to_datetime64().astype("datetime64[us]"),
                         "true_probability": 1 - survival.mean(axis=0)})
