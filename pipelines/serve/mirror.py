"""The learned score's event mirror: what the features of every contact read, kept in memory.

Exact incremental upkeep of every feature family (calendar-day sets, window counts that expire,
the latest event's account, account features over other contacts) would need one hand-kept
structure per family and per window. Instead the mirror keeps what the features read: per
contact the time, type code, value and account of each stored event, and per contact its
contacts-table account, ``created_at`` and traits; plus, per account, its members. It is loaded
from the service database once at start and appended to after each commit (O(1) per event).
For the contacts a commit touched, :meth:`EventMirror.feature_frame` computes their rows at
``as_of`` in ONE vectorised numpy pass over their events, implementing the definitions of
:func:`propensity.features.build.build_features` (tested equal on random data).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from propensity.pipelines.serve import db
from propensity.pipelines.serve.feature_plan import (
    NO_AGE,
    US_PER_DAY,
    FeaturePlan,
    account_columns,
    days_or_nan,
    half_life_text,
    purchase_summary,
    trait_number,
)
from propensity.pipelines.serve.ingest import ContactUpdate, EventRow
from propensity.pipelines.serve.state import to_micros

__all__ = ["EventMirror"]

class _Log:
    """One contact's events, appended in any order; arrays rebuilt lazily after an append."""

    __slots__ = ("_arrays", "account", "code", "ts", "value")

    def __init__(self) -> None:
        self.ts: list[int] = []
        self.code: list[int] = []
        self.value: list[float] = []
        self.account: list[str | None] = []
        self._arrays: tuple[np.ndarray, ...] | None = None

    def add(self, ts_us: int, code: int, value: float | None, account: str | None) -> None:
        self.ts.append(ts_us)
        self.code.append(code)
        self.value.append(math.nan if value is None else float(value))
        self.account.append(account)
        self._arrays = None

    def arrays(self) -> tuple[np.ndarray, ...]:
        if self._arrays is None:
            self._arrays = (
                np.array(self.ts, dtype="int64"),
                np.array(self.code, dtype="int64"),
                np.array(self.value, dtype="float64"),
                np.array(self.account, dtype=object),
            )
        return self._arrays


class _AccountLog:
    """(contact number, ts) of the events carrying one ``account_id``."""

    __slots__ = ("_arrays", "number", "ts")

    def __init__(self) -> None:
        self.number: list[int] = []
        self.ts: list[int] = []
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, number: int, ts_us: int) -> None:
        self.number.append(number)
        self.ts.append(ts_us)
        self._arrays = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._arrays = (np.array(self.number, dtype="int64"), np.array(self.ts, dtype="int64"))
        return self._arrays


@dataclass
class _Contact:
    account: str | None = None  # the contacts table's, which wins over the events'
    created_us: int | None = None
    traits: dict[str, Any] = field(default_factory=dict)


class EventMirror:
    """What the features of every contact read, kept in memory (see the module docstring).

    Parameters
    ----------
    plan : FeaturePlan
    """

    def __init__(self, plan: FeaturePlan) -> None:
        self.plan = plan
        self._codes = {t: i for i, t in enumerate(plan.names)}
        self._other = len(plan.names)
        weighted = set(plan.config.value_weighted_types)
        self._weighted = np.array([t in weighted for t in plan.names] + [False])
        self._monetary = {i for i, t in enumerate(plan.names) if t in plan.config.monetary_types}
        self._logs: dict[str, _Log] = {}
        self._contacts: dict[str, _Contact] = {}
        self._table_members: dict[str, set[str]] = {}  # account -> contacts-table members
        # account -> (contact number, ts) of every event carrying that account_id
        self._account_events: dict[str, _AccountLog] = {}
        self._numbers: dict[str, int] = {}  # contact -> its number in _has_table_account
        self._has_table_account = np.zeros(1024, dtype=bool)

    def _number(self, contact: str) -> int:
        number = self._numbers.get(contact)
        if number is None:
            number = self._numbers[contact] = len(self._numbers)
            if number >= len(self._has_table_account):
                self._has_table_account = np.concatenate([self._has_table_account,
                                                          np.zeros(len(self._has_table_account), dtype=bool)])
        return number

    # ---------------------------------------------------------------- changes

    def add_event(self, contact: str, ts: datetime, event_type: str, value: float | None,
                  account: str | None) -> None:
        log_ = self._logs.get(contact)
        if log_ is None:
            log_ = self._logs[contact] = _Log()
        log_.add(to_micros(ts), self._codes.get(event_type, self._other), value, account)
        if account is not None:
            if account not in self._account_events:
                self._account_events[account] = _AccountLog()
            self._account_events[account].add(self._number(contact), to_micros(ts))

    def update_contact(self, contact: str, account: str | None, created_at: datetime | None,
                       traits: Mapping[str, Any]) -> None:
        """An identify call: a NULL account or created_at keeps the stored one (as the service table)."""
        info = self._contacts.get(contact)
        if info is None:
            info = self._contacts[contact] = _Contact()
        if account is not None and account != info.account:
            if info.account is not None:
                self._table_members.get(info.account, set()).discard(contact)
            info.account = account
            self._table_members.setdefault(account, set()).add(contact)
            self._has_table_account[self._number(contact)] = True
        if created_at is not None:
            info.created_us = to_micros(created_at)
        info.traits.update(traits)

    def record(self, events: Iterable[EventRow], updates: Iterable[ContactUpdate]) -> None:
        """Committed rows (only events stored for the first time)."""
        for update in updates:
            self.update_contact(update.contact_id, update.account_id, update.created_at, update.traits)
        for event in events:
            self.add_event(event.contact_id, event.ts, event.event_type, event.value, event.account_id)

    def load(self, conn: sa.Connection) -> int:
        """Fill the mirror from the service database; returns the number of events read."""
        for row in conn.execute(sa.select(db.contacts.c.contact_id, db.contacts.c.account_id,
                                          db.contacts.c.created_at, db.contacts.c.traits)):
            self.update_contact(row.contact_id, row.account_id, row.created_at, json.loads(row.traits or "{}"))
        e = db.events.c
        n = 0
        result = conn.execute(sa.select(e.contact_id, e.ts, e.event_type, e.value, e.account_id))
        for row in result:
            self.add_event(row.contact_id, row.ts, row.event_type, row.value, row.account_id)
            n += 1
        return n

    # ---------------------------------------------------------------- features

    def feature_frame(self, contacts: Sequence[str], as_of: datetime) -> pd.DataFrame:
        """Feature rows of ``contacts`` at ``as_of``, as ``build_features`` makes them.

        Columns: ``contact_id, as_of, account_id``, every generated feature, then the attributes
        the model uses. Only events with ``ts < as_of`` are read.
        """
        out, accounts = self.feature_arrays(contacts, as_of)
        frame = pd.DataFrame({"contact_id": list(contacts), "as_of": [as_of] * len(contacts), "account_id": accounts})
        frame = pd.concat([frame, pd.DataFrame({c: out[c] for c in self.plan.columns})], axis=1)
        for name in self.plan.attributes:
            frame[name] = pd.Series(out[name], dtype=object) if name in self.plan.categorical else out[name]
        return frame

    def feature_arrays(self, contacts: Sequence[str], as_of: datetime) -> tuple[dict[str, np.ndarray], list]:
        """:meth:`feature_frame`'s columns as arrays (no DataFrame), and the rows' accounts."""
        plan, cfg = self.plan, self.plan.config
        T = to_micros(as_of)
        R, K1 = len(contacts), self._other + 1
        rows, ages, codes, values, days = [], [], [], [], []
        for r, contact in enumerate(contacts):
            log_ = self._logs.get(contact)
            if log_ is None:
                continue
            ts, code, value, _ = log_.arrays()
            keep = ts < T
            rows.append(np.full(int(keep.sum()), r, dtype="int64"))
            ages.append(T - ts[keep])
            codes.append(code[keep])
            values.append(value[keep])
            days.append(T // US_PER_DAY - ts[keep] // US_PER_DAY)  # UTC calendar days back
        cat = (lambda parts, dtype: np.concatenate(parts) if parts else np.empty(0, dtype))
        r_, age, k, v, day = (cat(rows, "int64"), cat(ages, "int64"), cat(codes, "int64"),
                              cat(values, "float64"), cat(days, "int64"))
        g, G = r_ * K1 + k, R * K1
        age_days = age.astype("float64") / US_PER_DAY  # as the build: DOUBLE(age) / us per day
        windows = sorted({*cfg.windows_days, cfg.momentum_days, 2 * cfg.momentum_days})
        counts = {n: np.bincount(g, weights=(age <= n * US_PER_DAY), minlength=G).reshape(R, K1).round()
                  .astype("int64") for n in windows}
        min_age = np.full(G, NO_AGE, dtype="int64")
        np.minimum.at(min_age, g, age)
        min_age = min_age.reshape(R, K1)
        max_age = np.full(G, -1, dtype="int64")
        np.maximum.at(max_age, g, age)
        max_age = max_age.reshape(R, K1)
        total = np.bincount(g, minlength=G).reshape(R, K1)
        out: dict[str, np.ndarray] = {}
        decayed = []
        for h in cfg.half_lives_days:
            factor = 0.5 ** (age_days / h)
            factor = np.where(self._weighted[k], factor * v, factor)
            factor = np.where(np.isnan(factor), 0.0, factor)  # a NULL value adds nothing to SUM
            decayed.append(np.bincount(g, weights=factor, minlength=G).reshape(R, K1))
        active = {}
        span = max(cfg.resolved_active_days_windows) + 2
        for n in cfg.resolved_active_days_windows:
            # distinct UTC dates among the window's events: the build's day bits plus edge bit
            sel = (age <= n * US_PER_DAY) & (k < self._other)
            unique = np.unique(g[sel] * span + day[sel])
            active[n] = np.bincount(unique // span, minlength=G).reshape(R, K1)
        for j, name in enumerate(plan.names.values()):
            for n in cfg.windows_days:
                out[f"{name}__count_{n}d"] = counts[n][:, j]
            out[f"{name}__days_since_last"] = days_or_nan(min_age[:, j])
            for i, h in enumerate(cfg.half_lives_days):
                out[f"{name}__decayed_{half_life_text(h)}d"] = decayed[i][:, j]
            for n in cfg.resolved_active_days_windows:
                out[f"{name}__active_days_{n}d"] = active[n][:, j].astype("int64")
            if cfg.lifetime_features:
                n_all, first, last = total[:, j], max_age[:, j], min_age[:, j]
                out[f"{name}__count_total"] = n_all.astype("int64")
                out[f"{name}__days_since_first"] = np.where(first < 0, np.nan, first.astype("float64") / US_PER_DAY)
                with np.errstate(invalid="ignore", divide="ignore"):
                    gap = (first - last).astype("float64") / US_PER_DAY / (n_all - 1).astype("float64")
                out[f"{name}__mean_gap_days"] = np.where(n_all > 1, gap, np.nan)
            if cfg.trend_windows is not None:
                short, long = cfg.trend_windows
                recent, within = counts[short][:, j], counts[long][:, j]
                with np.errstate(invalid="ignore", divide="ignore"):
                    ratio = (recent * long).astype("float64") / (within * short).astype("float64")
                out[f"{name}__trend_{short}d_{long}d"] = np.where(within > 0, ratio, np.nan)
            if j in self._monetary:
                out.update(purchase_summary(name, r_[k == j], day[k == j], v[k == j], R, T))
        for n in cfg.windows_days:
            out[f"all__count_{n}d"] = counts[n].sum(axis=1)
        out["all__days_since_last"] = days_or_nan(min_age.min(axis=1))
        named = self._other
        for n in cfg.windows_days:
            out[f"all__distinct_types_{n}d"] = (counts[n][:, :named] > 0).sum(axis=1).astype("int64")
        has_value = ~np.isnan(v)
        for n in cfg.windows_days:
            sel = (age <= n * US_PER_DAY) & has_value
            out[f"value__sum_{n}d"] = np.bincount(r_[sel], weights=v[sel], minlength=R)
        for n in cfg.windows_days:
            sel = (age <= n * US_PER_DAY) & has_value
            top = np.full(R, -np.inf)
            np.maximum.at(top, r_[sel], v[sel])
            out[f"value__max_{n}d"] = np.where(np.bincount(r_[sel], minlength=R) > 0, top, np.nan)
        max_age = np.full(R, -1, dtype="int64")
        np.maximum.at(max_age, r_, age)
        out["tenure_days"] = np.where(max_age < 0, np.nan, max_age.astype("float64") / US_PER_DAY)
        m = cfg.momentum_days
        recent, within = counts[m].sum(axis=1), counts[2 * m].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            momentum = (recent - (within - recent)).astype("float64") / within.astype("float64")
        out[f"all__momentum_{m}d"] = np.where(within == 0, 0.0, momentum)
        accounts = [self._account(c, T) for c in contacts]
        if plan.uses_accounts:
            stats = {a: self._account_stats(a, T) for a in dict.fromkeys(accounts) if a is not None}
            for name in account_columns(cfg):  # 0 without an account, as the build fills
                out[name] = np.array([stats[a][name] if a is not None else 0 for a in accounts], dtype="int64")
        for name in plan.attributes:
            values_ = [self._contacts[c].traits.get(name) if c in self._contacts else None for c in contacts]
            if name in plan.categorical:
                out[name] = np.array(values_, dtype=object)
            else:
                out[name] = np.array([trait_number(x) for x in values_], dtype="float64")
        return out, accounts

    def _account(self, contact: str, T: int) -> str | None:
        """The contacts table's account, else the account of the latest event before ``T``."""
        info = self._contacts.get(contact)
        if info is not None and info.account is not None:
            return info.account
        log_ = self._logs.get(contact)
        if log_ is None:
            return None
        ts, _, _, account = log_.arrays()
        sel = np.flatnonzero((ts < T) & (account != None))
        return None if not len(sel) else account[sel[np.argmax(ts[sel])]]

    def _account_stats(self, account: str, T: int) -> dict[str, int]:
        """``account__*`` at ``T``: members by the contacts table (known at T) or by their events.

        An event counts for its contact's contacts-table account when it has one, else for its
        own ``account_id``; a contacts-table member counts from ``created_at`` (NULL: always).
        """
        cfg = self.plan.config
        who, when = [], []
        known = set()
        for contact in self._table_members.get(account, ()):  # all their events count here
            number = self._number(contact)
            info = self._contacts[contact]
            if info.created_us is None or info.created_us < T:
                known.add(number)
            log_ = self._logs.get(contact)
            if log_ is not None:
                ts = log_.arrays()[0]
                who.append(np.full(len(ts), number, dtype="int64"))
                when.append(ts)
        carried = self._account_events.get(account)
        if carried is not None:  # events with this account_id, of contacts without a table account
            number, ts = carried.arrays()
            keep = ~self._has_table_account[number]
            who.append(number[keep])
            when.append(ts[keep])
        who_ = np.concatenate(who) if who else np.empty(0, dtype="int64")
        ts_ = np.concatenate(when) if when else np.empty(0, dtype="int64")
        before = ts_ < T
        who_, age = who_[before], T - ts_[before]
        active = np.unique(who_)
        recent = np.full(len(active), NO_AGE, dtype="int64")
        np.minimum.at(recent, np.searchsorted(active, who_), age)
        out = {f"account__active_contacts_{n}d": int((recent <= n * US_PER_DAY).sum()) for n in cfg.windows_days}
        out.update({f"account__count_{n}d": int((age <= n * US_PER_DAY).sum()) for n in cfg.windows_days})
        out["account__contacts"] = len(known.union(active.tolist()))
        return out

