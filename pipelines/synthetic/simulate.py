"""One block of contacts simulated day by day: accounts, fit, exposure, event draws and conversions."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from propensity.pipelines.synthetic.world import (
    _ACCOUNT_INTENT_SHAPE,
    _BETA,
    _BLOCK,
    _COUNTRIES,
    _DAY_US,
    _EMAIL_GATED,
    _INDUSTRIES,
    _INTENT_SHAPE,
    _JOURNEY_FLOOR,
    _JOURNEY_TAU_DAYS,
    _LEAD_SOURCES,
    _MIX_SIGMA,
    _N_KINDS,
    _N_REPEAT,
    _NEVER,
    _NO_PROPERTIES,
    _PATH_SHARES,
    _PLANS,
    _PRE_TRIAL_FACTOR,
    _PREEXISTING_DAYS,
    _PROFILE,
    _PURCHASE,
    _ROLES,
    _SATURATION,
    _SIZE_COEF,
    _SIZE_REFERENCE,
    _TRIAL,
    _TRIAL_GATED,
    _TRIAL_RATE,
    _UNSUB,
    _UNSUB_RATE,
    _UNSUBSCRIBED_FACTOR,
    _WEEKEND_FACTOR,
    WorldConfig,
    _Accounts,
    _Block,
)


def _stream(config: WorldConfig, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=key))


def _shares(table: Mapping[str, tuple[float, ...]]) -> np.ndarray:
    p = np.array([v[0] for v in table.values()])
    return p / p.sum()


def _effects(table: Mapping[str, tuple[float, ...]], column: int = 1) -> np.ndarray:
    return np.array([v[column] for v in table.values()])


def _draw_accounts(config: WorldConfig) -> _Accounts:
    rng = _stream(config, 0)
    n = config.n_accounts
    size = np.clip(np.rint(np.exp(rng.normal(np.log(60.0), 1.5, n))), 1, 100_000)
    return _Accounts(
        company_size=size.astype(np.int64),
        industry=rng.choice(len(_INDUSTRIES), n, p=_shares(_INDUSTRIES)),
        country=rng.choice(len(_COUNTRIES), n, p=_shares(_COUNTRIES)),
        intent=rng.gamma(_ACCOUNT_INTENT_SHAPE, 1.0 / _ACCOUNT_INTENT_SHAPE, n),
    )


def _fit_logit(accounts: _Accounts, account, role, plan) -> np.ndarray:
    size = accounts.company_size[account]
    return (
        _SIZE_COEF * np.log(size / _SIZE_REFERENCE)
        + _effects(_INDUSTRIES)[accounts.industry[account]]
        + _effects(_COUNTRIES)[accounts.country[account]]
        + _effects(_ROLES)[role]
        + _effects(_PLANS)[plan]
    )


def _amounts(company_size: np.ndarray, plan: np.ndarray) -> np.ndarray:
    seats = np.clip(np.sqrt(company_size), 1.0, 40.0)
    return _effects(_PLANS, 2)[plan] * (1.0 + 0.25 * seats)


def _exposure(
    config: WorldConfig, created_day: np.ndarray, created_tod_us: np.ndarray, days: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Share of each day a contact exists (``alive``) and its activity multiplier ``expo``.

    ``expo`` is alive x journey (engagement decays from 1 at creation towards a floor) x the
    weekday factor; every event rate is a per-contact rate times ``expo``.
    """
    age = days[None, :] - created_day[:, None]
    first_share = 1.0 - created_tod_us / _DAY_US
    alive = (age > 0).astype(np.float64)
    on_first = np.nonzero(age == 0)
    alive[on_first] = first_share[on_first[0]]
    journey = _JOURNEY_FLOOR + (1.0 - _JOURNEY_FLOOR) * np.exp(
        -np.arange(max(int(age.max()), 0) + 1) / _JOURNEY_TAU_DAYS
    )
    weekday = (config.start.weekday() + days) % 7
    weekday_factor = np.where(weekday >= 5, _WEEKEND_FACTOR, 1.0)
    expo = alive * journey[np.maximum(age, 0)]
    expo *= weekday_factor[None, :]
    return alive, expo


def _gates() -> np.ndarray:
    """Rate factor per (state, repeatable kind); state = trial_on + 2 * unsubscribed."""
    gates = np.ones((4, _N_REPEAT))
    for state in range(4):
        if not state & 1:
            gates[state, _TRIAL_GATED] *= _PRE_TRIAL_FACTOR
        if state & 2:
            gates[state, _EMAIL_GATED] *= _UNSUBSCRIBED_FACTOR
    return gates


def _saturate(decayed: np.ndarray) -> np.ndarray:
    return decayed / (1.0 + decayed * (1.0 / _SATURATION))


def _first_true(mask: np.ndarray) -> np.ndarray:
    first = mask.argmax(axis=1)
    return np.where(mask[np.arange(mask.shape[0]), first], first, _NEVER)


def _first_arrival(rng: np.random.Generator, intensity: np.ndarray) -> np.ndarray:
    """First day with an event when day ``d`` has one with probability ``1 - exp(-intensity)``."""
    threshold = rng.standard_exponential(intensity.shape[0])
    return _first_true(np.cumsum(intensity, axis=1) > threshold[:, None])


def _draw_kinds(
    rng: np.random.Generator, by_state: np.ndarray, contact: np.ndarray, state: np.ndarray
) -> np.ndarray:
    """Categorical draw of each event's kind from its contact's mix in its day's state."""
    rows = by_state.shape[0] * by_state.shape[1]
    cum = np.cumsum(by_state, axis=2).reshape(rows, _N_REPEAT)
    cum /= np.maximum(cum[:, -1:], np.finfo(float).tiny)
    cum += np.arange(rows)[:, None]  # row r spans (r, r + 1]: one sorted array for all rows
    row = contact * by_state.shape[1] + state
    kind = np.searchsorted(cum.ravel(), row + rng.random(row.size)) - row * _N_REPEAT
    return np.minimum(kind, _N_REPEAT - 1)


def _decayed_logit(config: WorldConfig, n: int, day, contact, kind) -> np.ndarray:
    """Hidden ``sum_k beta_k s(D_k)`` per (contact, day) from the events' days and kinds."""
    n_days = config.days
    order = np.argsort(day.astype(np.int16 if n_days < 2**15 else np.int64), kind="stable")
    bounds = np.searchsorted(day[order], np.arange(n_days + 1))
    cell = (contact * _N_KINDS + kind)[order]
    decay = 0.5 ** (1.0 / config.half_life_days)
    logit = np.empty((n_days, n))
    running = np.zeros(n * _N_KINDS)
    scratch = np.empty(n * _N_KINDS)
    for d in range(n_days):
        np.multiply(running, 1.0 / _SATURATION, out=scratch)
        scratch += 1.0
        np.divide(running, scratch, out=scratch)  # _saturate, without temporaries
        np.matmul(scratch.reshape(n, _N_KINDS), _BETA, out=logit[d])
        running += np.bincount(cell[bounds[d] : bounds[d + 1]], minlength=n * _N_KINDS)
        running *= decay
    return logit.T


def _place_in_day(rng, day, contact, created_day, created_tod_us) -> np.ndarray:
    """Uniform times within each event's day (after ``created_at`` on the creation day), in us."""
    tod = rng.integers(0, _DAY_US, day.size)
    first = np.flatnonzero(day == created_day[contact])
    since = created_tod_us[contact[first]]
    tod[first] = since + np.floor(tod[first] / _DAY_US * (_DAY_US - since)).astype(np.int64)
    return day * _DAY_US + tod


def _simulate_block(config: WorldConfig, accounts: _Accounts, block: int) -> _Block:
    rng = _stream(config, 1, block)
    first = block * _BLOCK
    n = min(_BLOCK, config.contacts - first)
    n_days = config.days
    days = np.arange(n_days)

    account = rng.integers(0, config.n_accounts, n)
    role = rng.choice(len(_ROLES), n, p=_shares(_ROLES))
    plan = rng.choice(len(_PLANS), n, p=_shares(_PLANS))
    source = rng.choice(len(_LEAD_SOURCES), n, p=np.array(list(_LEAD_SOURCES.values())))
    preexisting = rng.random(n) < config.preexisting_share
    before = -rng.integers(1, _PREEXISTING_DAYS + 1, n)
    during = rng.integers(0, n_days, n)
    created_day = np.where(preexisting, before, during)
    created_tod_us = rng.integers(0, _DAY_US, n)
    intent = accounts.intent[account] * rng.gamma(_INTENT_SHAPE, 1.0 / _INTENT_SHAPE, n)
    mix = np.exp(_MIX_SIGMA * rng.standard_normal((n, _N_REPEAT)) - _MIX_SIGMA**2 / 2)
    rates = config.activity_scale * intent[:, None] * mix * _PROFILE[None, :]
    trial_rate = _TRIAL_RATE * intent
    unsub_rate = _UNSUB_RATE / (0.5 + intent)
    fit = _fit_logit(accounts, account, role, plan)

    alive, expo = _exposure(config, created_day, created_tod_us, days)
    trial_day = _first_arrival(rng, trial_rate[:, None] * expo)
    unsub_day = _first_arrival(rng, unsub_rate[:, None] * expo)

    # Repeatable events: a Poisson total per contact-day, split by kind with the day's mix.
    state = (days[None, :] > trial_day[:, None]) + 2 * (days[None, :] > unsub_day[:, None])
    by_state = rates[:, None, :] * _gates()[None, :, :]
    totals = by_state.sum(axis=2)
    counts = rng.poisson(np.take_along_axis(totals, state, axis=1) * expo)
    cells = np.flatnonzero(counts)
    cell = np.repeat(cells, counts.ravel()[cells])
    ev_c, ev_d = np.divmod(cell, n_days)
    kind = _draw_kinds(rng, by_state, ev_c, state.ravel()[cell])
    path = np.full(cell.size, _NO_PROPERTIES, np.int8)
    views = np.flatnonzero(kind == 0)
    path[views] = rng.choice(3, views.size, p=_PATH_SHARES)
    path[kind == 1] = 3

    has_trial, has_unsub = trial_day < n_days, unsub_day < n_days
    once_c = np.concatenate([np.flatnonzero(has_trial), np.flatnonzero(has_unsub)])
    once_d = np.concatenate([trial_day[has_trial], unsub_day[has_unsub]])
    once_kind = np.repeat([_TRIAL, _UNSUB], [has_trial.sum(), has_unsub.sum()])

    logit = _decayed_logit(
        config, n, np.concatenate([ev_d, once_d]), np.concatenate([ev_c, once_c]),
        np.concatenate([kind, once_kind]),
    )
    logit += config.baseline_logit + fit[:, None]
    hazard = alive / (1.0 + np.exp(-logit))
    conv_day = _first_true(rng.random((n, n_days)) < hazard)
    converted = np.flatnonzero(conv_day < n_days)
    amount = _amounts(accounts.company_size[account], plan) * rng.lognormal(0.0, 0.25, n)
    repeat = (rng.random((converted.size, n_days)) < config.repeat_purchase_rate) & (
        days[None, :] > conv_day[converted, None]
    )
    rep_row, rep_d = np.nonzero(repeat)
    rep_c = converted[rep_row]
    rep_value = np.round(amount[rep_c] * rng.lognormal(0.0, 0.15, rep_c.size), 2)
    amount = np.round(amount, 2)

    ev_contact = np.concatenate([ev_c, once_c, converted, rep_c])
    ev_ts = _place_in_day(
        rng,
        np.concatenate([ev_d, once_d, conv_day[converted], rep_d]),
        ev_contact,
        created_day,
        created_tod_us,
    )
    ev_kind = np.concatenate(
        [kind, once_kind, np.full(converted.size + rep_c.size, _PURCHASE)]
    ).astype(np.int8)
    ev_value = np.concatenate([np.ones(cell.size + once_c.size), amount[converted], rep_value])
    ev_path = np.concatenate(
        [path, np.full(ev_contact.size - cell.size, _NO_PROPERTIES, np.int8)]
    )
    conv_ts = ev_ts[cell.size + once_c.size : cell.size + once_c.size + converted.size]
    order = np.argsort(ev_contact * (n_days * _DAY_US) + ev_ts, kind="stable")
    return _Block(
        first=first,
        account=account,
        role=role,
        plan=plan,
        source=source,
        created_day=created_day,
        created_tod_us=created_tod_us,
        intent=intent,
        rates=rates,
        trial_rate=trial_rate,
        unsub_rate=unsub_rate,
        fit=fit,
        ev_contact=ev_contact[order],
        ev_kind=ev_kind[order],
        ev_ts=ev_ts[order],
        ev_value=ev_value[order],
        ev_path=ev_path[order],
        conv_contact=converted,
        conv_ts=conv_ts,
        conv_value=amount[converted],
    )
