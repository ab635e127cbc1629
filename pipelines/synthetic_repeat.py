"""A third synthetic world: repeat purchases with a known truth (issue 13's repeat-purchase target).

The first two worlds convert each contact once. Here every contact is a customer who buys again
and again, as the BG/NBD story tells it, with two things BG/NBD does not see:

- **Purchases.** A customer is acquired with a first ``purchase`` on its creation day. While
  *alive* it buys ``Poisson(lambda)`` times a day; after each repeat purchase it dies (buys no
  more, ever) with probability ``p``. ``lambda`` is ``Gamma(r, alpha)`` times a fit multiplier
  (``loyalty_member`` and ``region`` raise or lower it: attributes BG/NBD ignores), ``p`` is
  ``Beta(a, b)``. Purchase values are log-normal around a personal level (independent of the
  rate, as BG/NBD assumes).
- **Engagement.** ``site_visit`` comes at a rate proportional to ``lambda`` while alive and at a
  tenth of it once dead, ``email_click`` at a personal rate that drops to a third once dead: both
  say whether a customer is still alive, which purchases alone reveal only slowly.
  ``newsletter_open`` and the ``signup_channel`` attribute carry no signal.

Outcomes are every purchase (``recurring: true``): the label at a cut-off is "buys at least once
in ``[as_of, as_of + horizon)``". The truth is exact, not simulated: dropout happens only after a
purchase, so a customer alive at ``as_of`` makes its first purchase of the window at rate
``lambda``, and :func:`repeat_true_probability` is ``alive(as_of) * (1 - exp(-lambda * days))``
from the hidden state.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["REPEAT_EVENT_TYPES", "RepeatWorld", "RepeatWorldConfig", "generate_repeat_world",
           "repeat_true_probability"]

_DAY_US = 86_400_000_000
REPEAT_EVENT_TYPES = ("purchase", "site_visit", "email_click", "newsletter_open")
_REGIONS = {"north": 0.25, "south": 0.0, "east": -0.3, "west": 0.1}
_REGION_SHARE = (0.25, 0.3, 0.25, 0.2)
_CHANNELS = ("search", "social", "referral", "direct")
_LOYALTY_EFFECT = 0.6  # log-rate multiplier of a loyalty member
_VISITS_PER_PURCHASE = 4.0
_DEAD_VISIT_SHARE, _DEAD_CLICK_SHARE = 0.1, 1 / 3


@dataclass(frozen=True)
class RepeatWorldConfig:
    """Size, seed and the hidden BG/NBD parameters (rates per day) of the repeat-purchase world.

    The default period (2024-01-01, 547 days) ends on 2025-06-30, so cut-offs in the first half
    of 2025 have a year of purchase history behind them.
    """

    contacts: int = 20_000
    days: int = 547
    seed: int = 0
    start: dt.date = dt.date(2024, 1, 1)
    r: float = 0.9  # Gamma shape of the purchase rate
    alpha: float = 30.0  # Gamma rate (days): mean rate r / alpha, about one purchase a month
    a: float = 1.2  # Beta of the dropout probability after a repeat purchase: mean a / (a + b)
    b: float = 6.0
    acquisition_days: int = 480  # customers are acquired uniformly over the first this many days

    def __post_init__(self) -> None:
        if self.contacts < 1 or self.days < 2:
            raise ValueError("contacts must be at least 1 and days at least 2")
        if not 0 < self.acquisition_days <= self.days:
            raise ValueError("acquisition_days must be in (0, days]")
        if min(self.r, self.alpha, self.a, self.b) <= 0:
            raise ValueError("r, alpha, a and b must be positive")


@dataclass(frozen=True, eq=False)
class RepeatWorld:
    """Observable tables (as :class:`propensity.pipelines.synthetic.World`) plus the hidden state.

    ``latent`` per contact: ``rate`` (purchases a day while alive, fit included), ``dropout``,
    ``created_day`` (the day of the first purchase) and ``dead_from`` (the first day it no longer
    buys; ``days`` when it is alive at the end).
    """

    events: pd.DataFrame
    contacts: pd.DataFrame
    outcomes: pd.DataFrame
    config: RepeatWorldConfig
    latent: pd.DataFrame


def _latent(rng: np.random.Generator, config: RepeatWorldConfig) -> pd.DataFrame:
    n = config.contacts
    loyalty = rng.random(n) < 0.3
    region = rng.choice(list(_REGIONS), n, p=_REGION_SHARE)
    fit = _LOYALTY_EFFECT * loyalty + np.vectorize(_REGIONS.get)(region)
    base = rng.gamma(config.r, 1 / config.alpha, n)
    return pd.DataFrame({
        "rate": base * np.exp(fit - np.log(np.mean(np.exp(fit)))),  # the fit moves it, the mean stays r / alpha
        "dropout": rng.beta(config.a, config.b, n),
        "click_rate": rng.gamma(1.0, 0.03, n),
        "newsletter_rate": rng.gamma(1.5, 0.02, n),
        "value_level": np.exp(rng.normal(np.log(45), 0.5, n)),
        "created_day": rng.integers(0, config.acquisition_days, n),
        "loyalty_member": loyalty,
        "region": region,
        "signup_channel": rng.choice(_CHANNELS, n),
    })


def generate_repeat_world(config: RepeatWorldConfig = RepeatWorldConfig()) -> RepeatWorld:
    """Draw the world day by day (about 30 events per customer over the default period)."""
    rng = np.random.default_rng([config.seed, 0x4E9E])
    latent = _latent(rng, config)
    n, days = config.contacts, config.days
    rate, dropout = latent["rate"].to_numpy(), latent["dropout"].to_numpy()
    created = latent["created_day"].to_numpy()
    alive = np.ones(n, dtype=bool)
    dead_from = np.full(n, days)
    counts = np.zeros((days, n, len(REPEAT_EVENT_TYPES)), dtype=np.int16)
    for day in range(days):
        acquired, active = created == day, created < day
        buying = active & alive
        bought = np.where(buying, rng.poisson(rate), 0) + acquired
        # each repeat purchase is followed by a dropout draw; the acquisition purchase is not
        repeats = np.where(acquired, 0, bought)
        survives = rng.random(n) < (1 - dropout) ** repeats
        died = buying & ~survives
        dead_from[died] = day + 1
        alive &= ~died
        live = dead_from > day  # alive at the start of the day
        visit_rate = _VISITS_PER_PURCHASE * rate * np.where(live, 1.0, _DEAD_VISIT_SHARE)
        click_rate = latent["click_rate"].to_numpy() * np.where(live, 1.0, _DEAD_CLICK_SHARE)
        seen = active | acquired
        counts[day, :, 0] = bought
        counts[day, :, 1] = rng.poisson(visit_rate * seen)
        counts[day, :, 2] = rng.poisson(click_rate * seen)
        counts[day, :, 3] = rng.poisson(latent["newsletter_rate"].to_numpy() * seen)
    latent["dead_from"] = dead_from
    events, contacts, outcomes = _tables(rng, config, counts, latent)
    return RepeatWorld(events=events, contacts=contacts, outcomes=outcomes, config=config, latent=latent)


def _tables(rng: np.random.Generator, config: RepeatWorldConfig, counts: np.ndarray, latent: pd.DataFrame):
    n = config.contacts
    ids = np.array([f"r{i:06d}" for i in range(n)], dtype=object)
    start = pd.Timestamp(config.start)
    created = latent["created_day"].to_numpy()
    day, contact, kind = np.nonzero(counts)
    reps = counts[day, contact, kind].astype(np.int64)
    day, contact, kind = np.repeat(day, reps), np.repeat(contact, reps), np.repeat(kind, reps)
    offset = rng.integers(2, _DAY_US, len(day))
    # the acquisition purchase (the only one of its day) opens the day, just after the creation instant
    offset[(kind == 0) & (day == created[contact])] = 1
    ts_us = (day * _DAY_US + offset).astype(np.int64)
    order = np.lexsort((ts_us, contact))
    day, contact, kind, ts_us = day[order], contact[order], kind[order], ts_us[order]
    value = np.ones(len(day))
    buys = kind == 0
    value[buys] = np.round(latent["value_level"].to_numpy()[contact[buys]] * np.exp(rng.normal(0, 0.3, int(buys.sum()))), 2)
    stamps = (start + pd.to_timedelta(ts_us, unit="us")).astype("datetime64[us]")
    events = pd.DataFrame({
        "event_id": [f"re{i:08d}" for i in range(len(day))],
        "contact_id": ids[contact].astype(str),
        "event_type": np.array(REPEAT_EVENT_TYPES, dtype=object)[kind].astype(str),
        "ts": stamps,
        "value": value,
        "account_id": pd.Series([None] * len(day), dtype="str"),
        "properties": pd.Series([None] * len(day), dtype="str"),
    })
    contacts = pd.DataFrame({
        "contact_id": ids.astype(str),
        "account_id": pd.Series([None] * n, dtype="str"),
        "created_at": (start + pd.to_timedelta(created * _DAY_US, unit="us")).astype("datetime64[us]"),
        "loyalty_member": latent["loyalty_member"].to_numpy(dtype=bool),
        "region": latent["region"].astype(str).to_numpy(),
        "signup_channel": latent["signup_channel"].astype(str).to_numpy(),
    })
    purchases = events[buys]
    outcomes = pd.DataFrame({
        "outcome_id": [f"ro{i:08d}" for i in range(len(purchases))],
        "contact_id": purchases["contact_id"].to_numpy(),
        "ts": purchases["ts"].to_numpy(),
        "outcome": "purchase",
        "value": purchases["value"].to_numpy(),
    })
    return events, contacts, outcomes


def repeat_true_probability(world: RepeatWorld, as_of: object, horizon_days: float = 30) -> pd.DataFrame:
    """Exact ``P(at least one purchase in [as_of, as_of + horizon))`` per customer acquired before ``as_of``.

    ``as_of`` must be a midnight inside the period; the window is cut at the period's end.
    Returns ``contact_id, as_of, true_probability``.
    """
    cfg = world.config
    stamp = pd.Timestamp(as_of)
    t0 = (stamp - pd.Timestamp(cfg.start)) / pd.Timedelta(days=1)
    if stamp != stamp.normalize() or not 0 < t0 < cfg.days:
        raise ValueError(f"as_of must be a midnight inside the world's {cfg.days} days, got {as_of}")
    t0 = int(t0)
    latent = world.latent
    keep = latent["created_day"].to_numpy() < t0
    alive = latent["dead_from"].to_numpy()[keep] > t0
    days = min(float(horizon_days), float(cfg.days - t0))
    probability = alive * -np.expm1(-latent["rate"].to_numpy()[keep] * days)
    ids = np.array([f"r{i:06d}" for i in np.flatnonzero(keep)])
    return pd.DataFrame({"contact_id": ids, "as_of": stamp.to_datetime64().astype("datetime64[us]"),
                         "true_probability": probability})
