"""The true conversion probability at a cut-off, simulated exactly from the history before it."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from propensity.pipelines.synthetic.simulate import (
    _exposure,
    _gates,
    _saturate,
    _stream,
)
from propensity.pipelines.synthetic.tables import _start_us
from propensity.pipelines.synthetic.world import (
    _BETA,
    _DAY_US,
    _KINDS,
    _N_KINDS,
    _N_REPEAT,
    _PRICING_JSON,
    _REPEAT_KINDS,
    _SATURATION,
    _TRIAL,
    _TRUTH_CHUNK,
    _UNSUB,
    World,
    WorldConfig,
)


def _as_of_day(config: WorldConfig, as_of: object) -> int:
    stamp = pd.Timestamp(as_of)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    if stamp != stamp.normalize():
        raise ValueError(f"as_of must be a midnight (a date), got {stamp}")
    day = (stamp - pd.Timestamp(config.start)).days
    if not 0 <= day < config.days:
        raise ValueError(f"as_of {stamp.date()} is outside the simulated period")
    return day


def _event_kinds(events: pd.DataFrame) -> np.ndarray:
    codes = pd.Categorical(events["event_type"], categories=list(_KINDS) + ["purchase"]).codes
    codes = np.where(codes == _KINDS.index("page_view"), 0, codes).astype(np.int64)
    pricing = (events["properties"] == _PRICING_JSON).to_numpy(dtype=bool, na_value=False)
    codes[pricing & (codes == 0)] = _KINDS.index("pricing_view")
    return codes


class Observed(NamedTuple):
    """What the tables show at a cut-off day, as the hidden hazard reads it (truth and contributions)."""

    contacts: pd.Index  # contact ids, in world.contacts order
    eligible: np.ndarray  # positions of the contacts created before the day and not yet converted
    who: np.ndarray  # position of each weighted event's contact
    kind: np.ndarray  # each weighted event's kind (index into _KINDS)
    decayed: np.ndarray  # (contacts, kinds): decayed counts at the day, every contact


def observed_at(world: World, t0: int) -> Observed:
    """The eligible contacts and the decayed counts per kind of the events before day ``t0``."""
    config = world.config
    stamp = pd.Timestamp(config.start) + pd.Timedelta(days=t0)
    index = pd.Index(world.contacts["contact_id"])
    converted = np.zeros(len(index), bool)
    converted[index.get_indexer(world.outcomes.loc[world.outcomes["ts"] < stamp, "contact_id"])] = True
    eligible = np.flatnonzero((world.latent["created_day"].to_numpy() < t0) & ~converted)
    history = world.events[world.events["ts"] < stamp]
    who = index.get_indexer(history["contact_id"])
    kind = _event_kinds(history)
    weighted = (kind >= 0) & (kind < _N_KINDS)
    who, kind = who[weighted], kind[weighted]
    ts_us = history["ts"].to_numpy().astype("datetime64[us]").astype(np.int64)[weighted]
    age_days = t0 - (ts_us - _start_us(config)) // _DAY_US
    decay = 0.5 ** (1.0 / config.half_life_days)
    decayed = np.bincount(who * _N_KINDS + kind, weights=decay**age_days,
                          minlength=len(index) * _N_KINDS).reshape(-1, _N_KINDS)
    return Observed(index, eligible, who, kind, decayed)


def true_probability(
    world: World, as_of: object, horizon_days: int = 30, n_simulations: int = 64
) -> pd.DataFrame:
    """The oracle probability of a first conversion in ``[as_of, as_of + horizon_days)``.

    For every contact created before ``as_of`` and not converted before it, this is
    ``P(first purchase in [as_of, as_of + horizon) | events before as_of, hidden parameters)``,
    with the window cut at the end of the simulated period (the world has no later events).
    It is an oracle upper bound on what a model can reach: it knows each contact's hidden intent,
    per-kind rates and fit, which no feature table shows.

    The hazard of the window's first day depends only on the history and is exact. Later days
    depend on events inside the window, so the window is simulated ``n_simulations`` times
    (seeded from the world's seed, the cut-off and the horizon, vectorised over contacts and
    simulations); each simulation contributes the exact survival ``prod_t (1 - h_t)`` of its
    engagement path (no conversion draw), so the only error is the Monte Carlo error of that
    average: unbiased, with a median relative error of about 2% per contact (90th percentile
    about 6%) at ``n_simulations=64``, shrinking as ``1 / sqrt(n_simulations)``. A one-day
    horizon is exact. About 3 s of CPU for 12,000 eligible contacts and 30 days at 64 paths.

    Parameters
    ----------
    world : World
        A world from :func:`generate_world`.
    as_of : date, datetime, str or pandas.Timestamp
        The cut-off, a midnight inside the simulated period.
    horizon_days : int
        Window length in days.
    n_simulations : int
        Monte Carlo paths of the window per contact.

    Returns
    -------
    pandas.DataFrame
        ``contact_id, as_of, true_probability``, one row per eligible contact.
    """
    if horizon_days < 1 or n_simulations < 1:
        raise ValueError("horizon_days and n_simulations must be at least 1")
    config = world.config
    t0 = _as_of_day(config, as_of)
    as_of_stamp = pd.Timestamp(config.start) + pd.Timedelta(days=t0)
    window = np.arange(t0, min(t0 + horizon_days, config.days))
    latent = world.latent
    contact_index, eligible, c, kind, decayed = observed_at(world, t0)
    decay = 0.5 ** (1.0 / config.half_life_days)
    created_day = latent["created_day"].to_numpy()
    trial_on = np.zeros(len(contact_index), bool)
    trial_on[c[kind == _TRIAL]] = True
    unsub_on = np.zeros(len(contact_index), bool)
    unsub_on[c[kind == _UNSUB]] = True

    rates = latent[[f"rate__{k}" for k in _REPEAT_KINDS]].to_numpy()
    created_at = world.contacts["created_at"].to_numpy().astype("datetime64[us]").astype(np.int64)
    created_tod_us = (created_at - _start_us(config)) % _DAY_US
    probability = np.empty(eligible.size)
    for lo in range(0, eligible.size, _TRUTH_CHUNK):
        idx = eligible[lo : lo + _TRUTH_CHUNK]
        rng = _stream(config, 2, t0, horizon_days, n_simulations, int(idx[0]))
        _, expo = _exposure(config, created_day[idx], created_tod_us[idx], window)
        probability[lo : lo + idx.size] = _simulate_window(
            rng=rng,
            n_simulations=n_simulations,
            base_logit=config.baseline_logit + latent["fit_logit"].to_numpy()[idx],
            decayed=decayed[idx],
            trial_on=trial_on[idx],
            unsub_on=unsub_on[idx],
            rates=rates[idx],
            trial_rate=latent["trial_rate"].to_numpy()[idx],
            unsub_rate=latent["unsubscribe_rate"].to_numpy()[idx],
            expo=expo,
            decay=decay,
        )
    return pd.DataFrame(
        {
            "contact_id": world.contacts["contact_id"].iloc[eligible].reset_index(drop=True),
            "as_of": np.full(eligible.size, as_of_stamp.to_datetime64().astype("datetime64[us]")),
            "true_probability": probability,
        }
    )


def _simulate_window(
    *,
    rng: np.random.Generator,
    n_simulations: int,
    base_logit: np.ndarray,
    decayed: np.ndarray,
    trial_on: np.ndarray,
    unsub_on: np.ndarray,
    rates: np.ndarray,
    trial_rate: np.ndarray,
    unsub_rate: np.ndarray,
    expo: np.ndarray,
    decay: float,
) -> np.ndarray:
    """``1 - mean_s prod_t (1 - h_{s,t})`` over simulated engagement paths of one window.

    Repeatable events are a Poisson process in cumulative-intensity time: each (path, contact,
    kind) cell holds the ungated intensity left until its next event, so random numbers are only
    drawn when an event happens. Decayed counts are kept undecayed, scaled by ``decay**-j``, so
    a day costs one pass for the saturation, one for the intensity and one for the events.
    """
    s, m = n_simulations, base_logit.size
    f32 = np.float32
    beta = (_BETA[:_N_REPEAT] * _SATURATION).astype(f32)  # s(x) = cap * x / (cap + x)
    scaled = np.broadcast_to(decayed[:, :_N_REPEAT].astype(f32), (s, m, _N_REPEAT)).copy()
    trial_d = np.broadcast_to(decayed[:, _TRIAL], (s, m)).copy()
    unsub_d = np.broadcast_to(decayed[:, _UNSUB], (s, m)).copy()
    trial = np.broadcast_to(trial_on, (s, m)).copy()
    unsub = np.broadcast_to(unsub_on, (s, m)).copy()
    gates = _gates().astype(f32)
    gate = gates[trial.astype(np.intp) + 2 * unsub.astype(np.intp)]  # (s, m, kinds)
    remaining = rng.standard_exponential((s, m, _N_REPEAT), dtype=f32) / gate
    flat_remaining, flat_scaled, flat_gate = (a.reshape(-1) for a in (remaining, scaled, gate))
    survival = np.ones((s, m))
    scratch = np.empty_like(scaled)
    scale = 1.0  # scaled = decayed * scale
    for j in range(expo.shape[1]):
        np.add(scaled, f32(_SATURATION * scale), out=scratch)
        np.divide(scaled, scratch, out=scratch)
        logit = base_logit + scratch @ beta
        logit += _BETA[_TRIAL] * _saturate(trial_d) + _BETA[_UNSUB] * _saturate(unsub_d)
        survival *= 1.0 - 1.0 / (1.0 + np.exp(-logit))
        if j == expo.shape[1] - 1:
            break
        remaining -= (rates * expo[:, j : j + 1]).astype(f32)
        hit = np.flatnonzero(remaining <= 0)
        while hit.size:
            flat_scaled[hit] += f32(scale)
            flat_remaining[hit] += rng.standard_exponential(hit.size, dtype=f32) / flat_gate[hit]
            hit = hit[flat_remaining[hit] <= 0]
        new_trial = ~trial & (rng.random((s, m)) < -np.expm1(-trial_rate * expo[:, j]))
        new_unsub = ~unsub & (rng.random((s, m)) < -np.expm1(-unsub_rate * expo[:, j]))
        trial_d = (trial_d + new_trial) * decay
        unsub_d = (unsub_d + new_unsub) * decay
        scale /= decay
        if scale > 1e6:  # keep float32 far from overflow on long windows
            scaled *= f32(1.0 / scale)
            scale = 1.0
        changed = new_trial | new_unsub
        if changed.any():
            trial |= new_trial
            unsub |= new_unsub
            old = gate[changed]
            state = trial[changed].astype(np.intp) + 2 * unsub[changed].astype(np.intp)
            gate[changed] = gates[state]
            remaining[changed] *= old / gate[changed]
    return 1.0 - survival.mean(axis=0)
