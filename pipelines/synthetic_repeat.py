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
from the hidden state. :func:`repeat_observable_probability` is the observable ceiling: the same
chance given only what the tables show (exact Bayes with the world's priors).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["REPEAT_EVENT_TYPES", "RepeatWorld", "RepeatWorldConfig", "generate_repeat_world",
           "repeat_observable_probability", "repeat_true_probability"]

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


def repeat_observable_probability(world: RepeatWorld, as_of: object, horizon_days: float = 30) -> pd.DataFrame:
    """The best any model can do from the tables: ``P(buys in the window | everything before as_of)``.

    Bayes with the world's own priors and mechanism, from the observable tables only (events before
    ``as_of`` and the attributes): a customer is either alive, or died right after its last repeat
    purchase day (dropout only follows a purchase), and every hidden rate is conjugate (Gamma rates,
    Beta dropout), so both scenarios' evidence and the purchase chance of the alive one are exact.
    The gap between this and :func:`repeat_true_probability` is what no model can close.
    Returns ``contact_id, as_of, observable_probability``.
    """
    from scipy.special import betaln

    cfg = world.config
    stamp = pd.Timestamp(as_of)
    repeat_true_probability(world, stamp, horizon_days)  # the same checks of the cut-off
    start = pd.Timestamp(cfg.start)
    t0 = int((stamp - start) / pd.Timedelta(days=1))
    contacts = world.contacts
    created = ((contacts["created_at"] - start) // pd.Timedelta(days=1)).to_numpy()
    fit = _LOYALTY_EFFECT * contacts["loyalty_member"].to_numpy() + contacts["region"].map(_REGIONS).to_numpy()
    multiplier = np.exp(fit - np.log(np.mean(np.exp(fit))))  # as the generator scales the rate
    index = pd.Index(contacts["contact_id"])
    ev = world.events[world.events["ts"] < stamp]
    day = ((ev["ts"] - start) // pd.Timedelta(days=1)).to_numpy()
    who = index.get_indexer(ev["contact_id"])
    kind = ev["event_type"].to_numpy()
    n = len(contacts)
    repeat = (kind == "purchase") & (day > created[who])
    x = np.bincount(who[repeat], minlength=n).astype(float)
    last = np.full(n, -1)
    np.maximum.at(last, who[repeat], day[repeat])
    n_last = np.bincount(who[repeat & (day == last[who])], minlength=n).astype(float)

    def split(type_name: str) -> tuple[np.ndarray, np.ndarray]:
        mine = kind == type_name
        early = np.bincount(who[mine & (day <= last[who])], minlength=n).astype(float)
        return early, np.bincount(who[mine], minlength=n) - early

    v1, v2 = split("site_visit")
    c1, c2 = split("email_click")
    v, c = v1 + v2, c1 + c2
    k = _VISITS_PER_PURCHASE
    rate0, click0 = cfg.alpha / multiplier, 1 / 0.03  # Gamma rates of lambda and of the click rate
    seen = t0 - created  # days with visits and clicks, the creation day included
    shape = cfg.r + x + v
    died = x > 0
    with np.errstate(all="ignore"):  # customers acquired from as_of on are computed, then left out
        rate_alive = rate0 + (seen - 1) + k * seen
        log_alive = (-shape * np.log(rate_alive) + betaln(cfg.a, cfg.b + x)
                     - (1 + c) * np.log(click0 + seen))
        early_days, late_days = last - created + 1, t0 - 1 - last
        rate_dead = rate0 + (early_days - 1) + k * early_days + k * _DEAD_VISIT_SHARE * late_days
        lower = betaln(cfg.a, cfg.b + x - n_last)
        log_dead = (-shape * np.log(rate_dead) + v2 * np.log(_DEAD_VISIT_SHARE)
                    + lower + np.log1p(-np.exp(betaln(cfg.a, cfg.b + x) - lower))
                    - (1 + c) * np.log(click0 + early_days + _DEAD_CLICK_SHARE * late_days)
                    + c2 * np.log(_DEAD_CLICK_SHARE))
        alive = np.where(died, 1 / (1 + np.exp(log_dead - log_alive)), 1.0)
        days = min(float(horizon_days), float(cfg.days - t0))
        buys = -np.expm1(shape * np.log(rate_alive / (rate_alive + days)))
    keep = created < t0
    return pd.DataFrame({"contact_id": contacts["contact_id"].to_numpy()[keep],
                         "as_of": stamp.to_datetime64().astype("datetime64[us]"),
                         "observable_probability": (alive * buys)[keep]})
