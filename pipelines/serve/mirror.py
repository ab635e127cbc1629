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

import heapq
import json
import math
from collections.abc import Iterable, Mapping, Sequence
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
from propensity.pipelines.serve.folded import Folded, horizon_days
from propensity.pipelines.serve.ingest import ContactUpdate, EventRow
from propensity.pipelines.serve.mirror_logs import AccountLog, ContactInfo, EventLog
from propensity.pipelines.serve.state import from_micros, to_micros

__all__ = ["EventMirror", "MirrorHorizonError"]


class MirrorHorizonError(ValueError):
    """Features asked at an instant before the mirror's horizon (its old events are folded)."""

class EventMirror:
    """What the features of every contact read, kept in memory (see the module docstring).

    Parameters
    ----------
    plan : FeaturePlan
    extra_days : int
        Days of events kept one by one past the model's horizon, so that feature states that
        far back can be computed (the learned change split's ``since``); 0: the horizon only.
    """

    def __init__(self, plan: FeaturePlan, extra_days: int = 0) -> None:
        self.plan = plan
        self._codes = {t: i for i, t in enumerate(plan.names)}
        self._other = len(plan.names)
        weighted = set(plan.config.value_weighted_types)
        self._weighted = np.array([t in weighted for t in plan.names] + [False])
        self._monetary = {i for i, t in enumerate(plan.names) if t in plan.config.monetary_types}
        self._logs: dict[str, EventLog] = {}
        self._contacts: dict[str, ContactInfo] = {}
        self._table_members: dict[str, set[str]] = {}  # account -> contacts-table members
        # account -> (contact number, ts) of every event carrying that account_id
        self._account_events: dict[str, AccountLog] = {}
        self._numbers: dict[str, int] = {}  # contact -> its number in _has_table_account
        self._has_table_account = np.zeros(1024, dtype=bool)
        # events before _cut are folded (propensity.pipelines.serve.folded); None: none are
        self._horizon = horizon_days(plan.config) * US_PER_DAY  # what a feature row reads back
        self._keep = self._horizon + extra_days * US_PER_DAY  # what is kept one by one
        self._cut: int | None = None
        self._folded: dict[str, Folded] = {}
        self._folded_accounts: dict[str, set[int]] = {}  # account -> contacts with folded events carrying it
        self._due: list[tuple[int, str]] = []  # heap of (oldest live ts, contact)
        self._half_lives = tuple(plan.config.half_lives_days)

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
        ts_us, code = to_micros(ts), self._codes.get(event_type, self._other)
        if self._cut is not None and ts_us < self._cut:  # older than the horizon already
            self._fold(contact, ts_us, code, math.nan if value is None else float(value), account)
            return
        log_ = self._logs.get(contact)
        if log_ is None:
            log_ = self._logs[contact] = EventLog()
        if ts_us < log_.oldest:
            heapq.heappush(self._due, (ts_us, contact))
        log_.add(ts_us, code, value, account)
        if account is not None:
            if account not in self._account_events:
                self._account_events[account] = AccountLog()
            self._account_events[account].add(self._number(contact), to_micros(ts))

    def update_contact(self, contact: str, account: str | None, created_at: datetime | None,
                       traits: Mapping[str, Any]) -> None:
        """An identify call: a NULL account or created_at keeps the stored one (as the service table)."""
        info = self._contacts.get(contact)
        if info is None:
            info = self._contacts[contact] = ContactInfo()
        if account is not None and account != info.account:
            if info.account is not None:
                self._table_members.get(info.account, set()).discard(contact)
            info.account = account
            self._table_members.setdefault(account, set()).add(contact)
            self._has_table_account[self._number(contact)] = True
        if created_at is not None:
            info.created_us = to_micros(created_at)
        info.traits.update(traits)

    def traits_of(self, contact: str) -> Mapping[str, Any]:
        """The contact's traits as the mirror holds them now (the latest identify's; not a copy)."""
        info = self._contacts.get(contact)
        return info.traits if info is not None else {}

    # ---------------------------------------------------------------- the horizon

    def _fold(self, contact: str, ts_us: int, code: int, value: float, account: str | None) -> None:
        folded = self._folded.get(contact)
        if folded is None:
            folded = self._folded[contact] = Folded(self._other + 1, len(self._half_lives), self._cut)
        folded.add(ts_us, code, value, account, half_lives=self._half_lives, weighted=bool(self._weighted[code]),
                   monetary=code in self._monetary, ref=self._cut)
        if account is not None:
            self._folded_accounts.setdefault(account, set()).add(self._number(contact))

    def fold(self, now: datetime, limit: int | None = None) -> bool:
        """Fold the events older than the horizon at ``now`` (at most ``limit`` contacts' worth).

        The cut is a UTC midnight at least the horizon before ``now``, and it never moves back.
        True when contacts with events to fold remain (call again).
        """
        cut = (to_micros(now) - self._keep) // US_PER_DAY * US_PER_DAY
        if self._cut is None or cut > self._cut:
            self._cut = cut
        done, dirty = 0, set()
        while self._due and self._due[0][0] < self._cut and (limit is None or done < limit):
            oldest, contact = heapq.heappop(self._due)
            log_ = self._logs.get(contact)
            if log_ is None or log_.oldest != oldest:
                continue  # a stale entry: the log was folded or got an older event since
            done += 1
            keep = EventLog()
            for ts_us, code, value, account in zip(log_.ts, log_.code, log_.value, log_.account):
                if ts_us < self._cut:
                    self._fold(contact, ts_us, code, value, account)
                    if account is not None:
                        dirty.add(account)
                else:
                    keep.add(ts_us, code, value, account)
            if keep.ts:
                self._logs[contact] = keep
                heapq.heappush(self._due, (keep.oldest, contact))
            else:
                del self._logs[contact]
        for account in dirty:  # the account's event log keeps only what is inside the horizon
            carried = self._account_events[account]
            kept = AccountLog()
            for number, ts_us in zip(carried.number, carried.ts):
                if ts_us >= self._cut:
                    kept.add(number, ts_us)
            self._account_events[account] = kept
        return bool(self._due) and self._due[0][0] < self._cut

    @property
    def earliest_as_of(self) -> datetime | None:
        """The earliest instant features can be computed at (None: nothing was folded yet)."""
        return None if self._cut is None else from_micros(self._cut + self._horizon)

    def _check(self, T: int, contacts: Sequence[str]) -> None:
        if self._cut is not None and T < self._cut + self._horizon and self._reads_folded(contacts, T):
            raise MirrorHorizonError(
                f"as_of {from_micros(T).isoformat()} is before {from_micros(self._cut + self._horizon).isoformat()}: "
                f"the learned features at that time read events the service no longer keeps one by one "
                f"(it keeps the model's longest window plus a day, {self._horizon // US_PER_DAY} days, "
                f"and {(self._keep - self._horizon) // US_PER_DAY} more: learned_split_days); "
                "score that instant with `propensity score --as-of`")

    def _reads_folded(self, contacts: Sequence[str], T: int) -> bool:
        """Whether these contacts' rows read folded events: theirs, or (account features) their accounts'.

        Rows that read none are exact at any instant (every event they read is kept one by one).
        """
        if any(c in self._folded for c in contacts):
            return True
        if not self.plan.uses_accounts:
            return False
        accounts = {self._account(c, T) for c in contacts} - {None}
        return any(a in self._folded_accounts or any(m in self._folded for m in self._table_members.get(a, ()))
                   for a in accounts)

    def record(self, events: Iterable[EventRow], updates: Iterable[ContactUpdate]) -> None:
        """Committed rows (only events stored for the first time)."""
        for update in updates:
            self.update_contact(update.contact_id, update.account_id, update.created_at, update.traits)
        for event in events:
            self.add_event(event.contact_id, event.ts, event.event_type, event.value, event.account_id)

    def load(self, conn: sa.Connection, now: datetime | None = None) -> int:
        """Fill the mirror from the service database; returns the number of events read.

        With ``now``, events older than the horizon at ``now`` are folded as they are read.
        """
        if now is not None:
            self.fold(now)
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

    def feature_frame(self, contacts: Sequence[str], as_of: datetime, *, events_before: datetime | None = None,
                      traits: Mapping[str, Mapping[str, Any]] | None = None,
                      extra: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Feature rows of ``contacts`` at ``as_of``, as ``build_features`` makes them.

        Columns: ``contact_id, as_of, account_id``, every generated feature, then the attributes
        the model uses. Only events with ``ts < as_of`` are read; with ``events_before``, only
        those before it (every contact's: an account's members too), evaluated at ``as_of`` (the
        states of ``propensity explain --since``); ``traits``: per contact, the attributes to use
        instead of its own; ``extra``: more columns, last (the rules' columns of a model that reads them).
        """
        out, accounts = self.feature_arrays(contacts, as_of, events_before=events_before, traits=traits)
        # one constructor: a column at a time cost ~0.2 ms each, most of one contact's row
        columns: dict[str, Any] = {"contact_id": list(contacts), "as_of": [as_of] * len(contacts),
                                   "account_id": accounts}
        columns.update((c, out[c]) for c in self.plan.columns)
        for name in self.plan.attributes:
            columns[name] = pd.Series(out[name], dtype=object) if name in self.plan.categorical else out[name]
        columns.update(extra or {})
        return pd.DataFrame(columns)

    def feature_arrays(self, contacts: Sequence[str], as_of: datetime, *, events_before: datetime | None = None,
                       traits: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[dict[str, np.ndarray], list]:
        """:meth:`feature_frame`'s columns as arrays (no DataFrame), and the rows' accounts."""
        plan, cfg = self.plan, self.plan.config
        T = to_micros(as_of)
        self._check(T, contacts)
        cut = T if events_before is None else min(T, to_micros(events_before))
        if self._cut is not None and cut < self._cut and self._reads_folded(contacts, T):  # folded: all count
            raise MirrorHorizonError(f"events before {from_micros(cut).isoformat()}: the service no longer keeps "
                                     f"the events before {from_micros(self._cut).isoformat()} one by one")
        R, K1 = len(contacts), self._other + 1
        rows, ages, codes, values, days = [], [], [], [], []
        for r, contact in enumerate(contacts):
            log_ = self._logs.get(contact)
            if log_ is None:
                continue
            ts, code, value, _ = log_.arrays()
            keep = ts < cut
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
            # float even without live events (numpy's bincount of nothing is int64, whatever the weights),
            # so that the folded events' sums can be added to it
            decayed.append(np.bincount(g, weights=factor, minlength=G).reshape(R, K1).astype("float64"))
        folded = [(r, self._folded[c]) for r, c in enumerate(contacts) if c in self._folded]
        oldest = np.full(R, -1, dtype="int64")  # the folded events' largest age, per row
        for r, f in folded:  # lifetime aggregates and decayed sums take the folded events in
            has = f.count > 0
            total[r] += f.count.astype("int64")
            min_age[r, has] = np.minimum(min_age[r, has], T - f.last[has].astype("int64"))
            max_age[r, has] = np.maximum(max_age[r, has], T - f.first[has].astype("int64"))
            oldest[r] = int(max_age[r, has].max()) if has.any() else -1
            for i, part in enumerate(f.decayed(T, self._half_lives).T):
                decayed[i][r] += part
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
                rows_j, day_j, v_j = r_[k == j], day[k == j], v[k == j]
                old = [(r, T // US_PER_DAY - d, total_) for r, f in folded
                       for d, total_ in ((f.days or {}).get(j) or {}).items()]
                if old:  # a folded day is one purchase day of that value (the summary sums per day)
                    extra = np.array(old, dtype="float64").reshape(-1, 3)
                    rows_j = np.concatenate([rows_j, extra[:, 0].astype("int64")])
                    day_j = np.concatenate([day_j, extra[:, 1].astype("int64")])
                    v_j = np.concatenate([v_j, extra[:, 2]])
                out.update(purchase_summary(name, rows_j, day_j, v_j, R, T))
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
        max_age = oldest
        np.maximum.at(max_age, r_, age)
        out["tenure_days"] = np.where(max_age < 0, np.nan, max_age.astype("float64") / US_PER_DAY)
        m = cfg.momentum_days
        recent, within = counts[m].sum(axis=1), counts[2 * m].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            momentum = (recent - (within - recent)).astype("float64") / within.astype("float64")
        out[f"all__momentum_{m}d"] = np.where(within == 0, 0.0, momentum)
        accounts = [self._account(c, cut) for c in contacts]
        if plan.uses_accounts:
            stats = {a: self._account_stats(a, T, cut) for a in dict.fromkeys(accounts) if a is not None}
            for name in account_columns(cfg):  # 0 without an account, as the build fills
                out[name] = np.array([stats[a][name] if a is not None else 0 for a in accounts], dtype="int64")
        for name in plan.attributes:
            values_ = [self._traits(c, traits).get(name) for c in contacts]
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
        folded = self._folded.get(contact)
        if log_ is None:
            return None if folded is None else folded.account
        ts, _, _, account = log_.arrays()
        sel = np.flatnonzero((ts < T) & (account != None))
        if not len(sel):
            return None if folded is None else folded.account
        return account[sel[np.argmax(ts[sel])]]

    def _traits(self, contact: str, given: Mapping[str, Mapping[str, Any]] | None) -> Mapping[str, Any]:
        return given[contact] if given is not None and contact in given else self.traits_of(contact)

    def _account_stats(self, account: str, T: int, cut: int | None = None) -> dict[str, int]:
        """``account__*`` at ``T`` (of the events before ``cut``, default ``T``): members by the
        contacts table (known at T) or by their events.

        An event counts for its contact's contacts-table account when it has one, else for its
        own ``account_id``; a contacts-table member counts from ``created_at`` (NULL: always).
        """
        cfg = self.plan.config
        who, when = [], []
        known = set()
        # contacts with folded events here: active before T (their events are older than the horizon)
        earlier = {n for n in self._folded_accounts.get(account, ()) if not self._has_table_account[n]}
        for contact in self._table_members.get(account, ()):  # all their events count here
            number = self._number(contact)
            info = self._contacts[contact]
            if info.created_us is None or info.created_us < T:
                known.add(number)
            if contact in self._folded:
                earlier.add(number)
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
        before = ts_ < (T if cut is None else cut)
        who_, age = who_[before], T - ts_[before]
        active = np.unique(who_)
        recent = np.full(len(active), NO_AGE, dtype="int64")
        np.minimum.at(recent, np.searchsorted(active, who_), age)
        out = {f"account__active_contacts_{n}d": int((recent <= n * US_PER_DAY).sum()) for n in cfg.windows_days}
        out.update({f"account__count_{n}d": int((age <= n * US_PER_DAY).sum()) for n in cfg.windows_days})
        out["account__contacts"] = len(known.union(active.tolist(), earlier))
        return out

