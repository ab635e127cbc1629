"""A synthetic world whose truth changes at a known date: what `propensity monitor` must notice.

Built on top of :func:`~propensity.pipelines.synthetic.generate_world`, never inside it, so the
existing worlds keep their exact output (their hash is tested). From ``change_day`` on:

* a **new event type** (``new_event_type``, e.g. ``integration_connected``) starts: each contact
  emits it at ``new_rate x intent x`` its daily engagement, and it carries the hidden log-hazard
  weight ``new_weight``. No rule counts it, and a model trained before the change has no column
  for it;
* an **existing event type stops mattering** (``stale_event_type``, ``teammate_invited`` by
  default): the product starts sending invitations for everyone, so from the change on the event
  arrives at ``stale_rate`` per day for every existing contact, whatever their intent, and its
  weight in the hidden hazard is 0 (the events before the change stop counting too).

Every other event is the base world's. Conversions are drawn again, day by day, from the hazard
of the module docstring of :mod:`propensity.pipelines.synthetic` with these time-varying weights
(before the change they are the base weights, so the world before the change is the base world
in distribution, with new draws). Only first purchases are kept (one ``purchase`` event and one
outcome per converted contact). Randomness comes from ``SeedSequence(seed, spawn_key=(3, ...))``,
a stream the base world never uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from propensity.pipelines.synthetic.simulate import _exposure, _saturate, _stream
from propensity.pipelines.synthetic.tables import _start_us, generate_world
from propensity.pipelines.synthetic.truth import _event_kinds
from propensity.pipelines.synthetic.world import (
    _BETA,
    _DAY_US,
    _KINDS,
    World,
    WorldConfig,
)

__all__ = ["ShiftConfig", "generate_shifted_world"]


@dataclass(frozen=True)
class ShiftConfig:
    """When and how the truth changes (see the module docstring)."""

    change_day: int
    new_event_type: str = "integration_connected"
    new_weight: float = 1.5
    new_rate: float = 0.06
    stale_event_type: str = "teammate_invited"
    stale_rate: float = 0.04

    def change_date(self, config: WorldConfig) -> pd.Timestamp:
        """The first instant of the new truth (midnight UTC)."""
        return pd.Timestamp(config.start) + pd.Timedelta(days=self.change_day)


def _poisson_events(rng, rate: np.ndarray, first_day: int, n_days: int):
    """(contact, day) pairs of a Poisson count per contact-day with ``rate`` (contacts x days), from ``first_day``."""
    counts = rng.poisson(rate[:, first_day:])
    cells = np.flatnonzero(counts)
    cell = np.repeat(cells, counts.ravel()[cells])
    contact, day = np.divmod(cell, n_days - first_day)
    return contact, day + first_day


def _times(rng, day: np.ndarray, contact: np.ndarray, created_day: np.ndarray, created_tod: np.ndarray) -> np.ndarray:
    """Microseconds since start, uniform in each day and after ``created_at`` on the creation day."""
    tod = rng.integers(0, _DAY_US, day.size)
    first = day == created_day[contact]
    since = created_tod[contact[first]]
    tod[first] = since + np.floor(tod[first] / _DAY_US * (_DAY_US - since)).astype(np.int64)
    return day * _DAY_US + tod


def generate_shifted_world(config: WorldConfig, shift: ShiftConfig) -> World:
    """The base world of ``config`` with the change of ``shift`` (see the module docstring)."""
    if not 0 < shift.change_day < config.days:
        raise ValueError(f"change_day must lie inside the simulated period (1..{config.days - 1}), "
                         f"got {shift.change_day}")
    if shift.stale_event_type not in _KINDS:
        raise ValueError(f"stale_event_type {shift.stale_event_type!r} is not an event type of the world: {_KINDS}")
    if shift.new_event_type in (*_KINDS, "purchase"):
        raise ValueError(f"new_event_type {shift.new_event_type!r} exists already")
    base = generate_world(config)
    rng = _stream(config, 3)
    n, n_days = len(base.contacts), config.days
    start_us = _start_us(config)
    created_day = base.latent["created_day"].to_numpy()
    created_us = base.contacts["created_at"].to_numpy().astype("datetime64[us]").astype(np.int64)
    created_tod = (created_us - start_us) % _DAY_US
    change_us = start_us + shift.change_day * _DAY_US
    alive, expo = _exposure(config, created_day, created_tod, np.arange(n_days))

    ts_us = base.events["ts"].to_numpy().astype("datetime64[us]").astype(np.int64)
    stale_after = (base.events["event_type"] == shift.stale_event_type).to_numpy() & (ts_us >= change_us)
    keep = ~stale_after & (base.events["event_type"] != "purchase").to_numpy()
    events = base.events[keep].reset_index(drop=True)

    # the new regime's events: the stale type for everyone alive, the new type with intent
    intent = base.latent["intent"].to_numpy()
    stale_c, stale_d = _poisson_events(rng, shift.stale_rate * alive, shift.change_day, n_days)
    new_c, new_d = _poisson_events(rng, shift.new_rate * intent[:, None] * expo, shift.change_day, n_days)
    added_c = np.concatenate([stale_c, new_c])
    added_d = np.concatenate([stale_d, new_d])
    added_type = np.repeat([shift.stale_event_type, shift.new_event_type], [stale_c.size, new_c.size])
    added_ts = _times(rng, added_d, added_c, created_day, created_tod)

    # hidden kinds of every remaining event (pricing views split out), the new type as one more kind
    kinds = _event_kinds(events)
    contact_index = pd.Index(base.contacts["contact_id"])
    ev_c = contact_index.get_indexer(events["contact_id"])
    ev_d = (events["ts"].to_numpy().astype("datetime64[us]").astype(np.int64) - start_us) // _DAY_US
    stale_kind, new_kind = _KINDS.index(shift.stale_event_type), len(_KINDS)
    all_c = np.concatenate([ev_c, added_c])
    all_d = np.concatenate([ev_d, added_d])
    all_k = np.concatenate([kinds, np.where(added_type == shift.new_event_type, new_kind, stale_kind)])
    weighted = (all_k >= 0) & (all_k <= new_kind)
    conv_day = _draw_conversions(rng, config, shift, base.latent["fit_logit"].to_numpy(), alive,
                                 all_c[weighted], all_d[weighted], all_k[weighted], n)
    converted = np.flatnonzero(conv_day < n_days)
    conv_us = _times(rng, conv_day[converted], converted, created_day, created_tod)
    amount = np.round(base.outcomes.set_index("contact_id")["value"].reindex(contact_index).to_numpy()[converted], 2)
    fallback = np.round(rng.lognormal(np.log(150.0), 0.5, converted.size), 2)  # contacts the base never converted
    amount = np.where(np.isfinite(amount), amount, fallback)

    ids = base.contacts["contact_id"].to_numpy()
    accounts = base.contacts["account_id"].to_numpy()
    added = pd.DataFrame({
        "event_id": [f"e{c[1:]}-s{i}" for i, c in enumerate(ids[added_c])],
        "contact_id": ids[added_c],
        "event_type": added_type,
        "ts": (added_ts + start_us).astype("datetime64[us]"),
        "value": 1.0,
        "account_id": accounts[added_c],
        "properties": None,
    })
    purchases = pd.DataFrame({
        "event_id": [f"e{c[1:]}-p" for c in ids[converted]],
        "contact_id": ids[converted],
        "event_type": "purchase",
        "ts": (conv_us + start_us).astype("datetime64[us]"),
        "value": amount,
        "account_id": accounts[converted],
        "properties": None,
    })
    events = pd.concat([events, added.astype(events.dtypes.to_dict()), purchases.astype(events.dtypes.to_dict())],
                       ignore_index=True).sort_values(["contact_id", "ts"], kind="stable").reset_index(drop=True)
    outcomes = pd.DataFrame({
        "outcome_id": ["o" + c[1:] for c in ids[converted]],
        "contact_id": ids[converted],
        "ts": purchases["ts"].to_numpy(),
        "outcome": "converted",
        "value": amount,
    }).astype(base.outcomes.dtypes.to_dict())
    return World(events=events, contacts=base.contacts, outcomes=outcomes, config=config, latent=base.latent)


def _draw_conversions(rng, config: WorldConfig, shift: ShiftConfig, fit: np.ndarray, alive: np.ndarray,
                      contact: np.ndarray, day: np.ndarray, kind: np.ndarray, n: int) -> np.ndarray:
    """First conversion day per contact (``>= days`` for none) under the weights of each day.

    The same recursion as the base simulator's ``_decayed_logit``: day ``d``'s hazard uses the
    events of days before ``d``, decayed with the world's half-life and saturated.
    """
    n_days, n_kinds = config.days, len(_KINDS) + 1
    before = np.append(_BETA, 0.0)
    after = before.copy()
    after[_KINDS.index(shift.stale_event_type)] = 0.0
    after[-1] = shift.new_weight
    order = np.argsort(day, kind="stable")
    bounds = np.searchsorted(day[order], np.arange(n_days + 1))
    cell = (contact * n_kinds + kind)[order]
    decay = 0.5 ** (1.0 / config.half_life_days)
    running = np.zeros(n * n_kinds)
    conv_day = np.full(n, np.iinfo(np.int64).max // 4)
    open_ = np.ones(n, bool)
    uniforms = rng.random((n, n_days))
    for d in range(n_days):
        beta = before if d < shift.change_day else after
        logit = config.baseline_logit + fit + _saturate(running).reshape(n, n_kinds) @ beta
        hazard = alive[:, d] / (1.0 + np.exp(-logit))
        hit = open_ & (uniforms[:, d] < hazard)
        conv_day[hit] = d
        open_ &= ~hit
        running += np.bincount(cell[bounds[d]:bounds[d + 1]], minlength=n * n_kinds)
        running *= decay
    return conv_day
