"""Learned scores in the service: the champion's features per contact, recomputed per commit.

Method. Exact incremental upkeep of every feature family (calendar-day sets, window counts that
expire, the latest event's account, account features over other contacts) would need one
hand-kept structure per family and per window. Instead the service keeps a mirror of what the
features read: per contact the time, type code, value and account of each stored event, and per
contact its contacts-table account, ``created_at`` and traits; plus, per account, its members.
The mirror is loaded from the service database once at start and appended to after each commit
(O(1) per event). For the contacts a commit touched, :meth:`EventMirror.feature_frame` computes
their rows at ``now`` in ONE vectorised numpy pass over their events, implementing the
definitions of :func:`propensity.features.build.build_features` (tested equal on random data), and the
champion scores the rows with ONE LightGBM predict per commit. A score request computes its one
contact's row at request time, so decay and windows are exact at any ``as_of``.

Cost: per event O(1) to record; per commit O(history of the touched contacts, plus the events of
their accounts' members when the model uses account features) array work and one predict.
Memory: about 250 bytes per stored event (Python lists plus cached arrays; measured), so ten
million events need ~2.5 GB. Times are integer microseconds (UTC), as in
:mod:`propensity.pipelines.serve.state`, so window edges are exact.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from propensity.features.build import KEY_COLUMNS, safe_name
from propensity.features.config import FeatureConfig
from propensity.pipelines.serve import db
from propensity.pipelines.serve.ingest import ContactUpdate, EventRow
from propensity.pipelines.serve.state import to_micros

__all__ = [
    "EventMirror",
    "FeaturePlan",
    "LearnedScores",
    "LearnedView",
    "ModelLocationError",
    "check_model_location",
    "load_registered_scorer",
]


_US_PER_DAY = 86_400_000_000
_NO_AGE = np.iinfo(np.int64).max


def _fmt(half_life: float) -> str:
    return f"{half_life:g}"  # propensity.features.build names decayed columns the same way


def _number(value: Any) -> float:
    """A trait as a float (NaN when missing or not a number), for a numeric attribute feature."""
    if value is None or isinstance(value, bool | int | float):
        return math.nan if value is None else float(value)
    try:
        return float(str(value))
    except ValueError:
        return math.nan


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class FeaturePlan:
    """The feature columns a model was trained on and how they are named (as the batch build)."""

    config: FeatureConfig
    event_types: tuple[str, ...]
    names: dict[str, str]  # event type -> its safe name, in the build's (given) order
    columns: tuple[str, ...]  # every generated feature column, in the build's order
    attributes: tuple[str, ...]  # contact attributes the model uses (traits of the same name)
    categorical: frozenset[str]

    @classmethod
    def from_scorer(cls, scorer: Any) -> FeaturePlan:
        """The plan of a :class:`propensity.pipelines.training.scorer.LearnedScorer`."""
        if getattr(scorer, "rule_inputs", None) is not None:
            # the rule__* columns (and a blended rule score) are not kept up by the mirror: refuse
            # the model rather than read them as missing traits (NaN)
            raise ValueError("the model reads the hand rules' columns (rule__*, `rule_inputs: true` in its training "
                             "config), which the service does not compute yet; score it in batch, or retrain it "
                             "with `rule_inputs: false` to serve it live")
        config = FeatureConfig.of_model(scorer.feature_config)
        if not config.is_resolved:
            unresolved = [k for k in ("windows_days", "half_lives_days", "monetary_types") if getattr(config, k) == "auto"]
            raise ValueError(f"the model's feature config leaves {unresolved} on `auto`: the service cannot know which "
                             "columns it was trained on; retrain it (training records the resolved choices)")
        event_types = tuple(scorer.event_types)
        names: dict[str, str] = {}
        for event_type in event_types:
            name = safe_name(event_type)
            if name in names.values():
                raise ValueError(f"event types of the model clash on the feature name {name!r}")
            names[event_type] = name
        columns = _column_names(config, names)
        generated = set(columns) | set(KEY_COLUMNS)
        attributes = tuple(c for c in scorer.feature_names if c not in generated)
        prefixes = {*names.values(), "all", "value", "account", "rule"}
        unknown = [c for c in attributes if c.split("__")[0] in prefixes and "__" in c]
        if unknown:  # read as traits they would be missing on every row: NaN, silently
            raise ValueError(f"the model uses feature families this service does not compute: {unknown[:5]}; "
                             "serve it with the version that trained it, or retrain")
        if attributes and not config.include_attributes:
            raise ValueError(f"the model uses features the service cannot compute: {list(attributes)[:5]}")
        return cls(config, event_types, names, tuple(columns), attributes, frozenset(scorer.categories))

    @property
    def uses_accounts(self) -> bool:
        return self.config.account_features


def _column_names(config: FeatureConfig, names: Mapping[str, str]) -> list[str]:
    out = []
    for name in names.values():
        out += [f"{name}__count_{n}d" for n in config.windows_days]
        out.append(f"{name}__days_since_last")
        out += [f"{name}__decayed_{_fmt(h)}d" for h in config.half_lives_days]
        out += [f"{name}__active_days_{n}d" for n in config.resolved_active_days_windows]
        out += _lifetime_columns(config, name)
        if name in {names[t] for t in config.monetary_types if t in names}:
            out += [f"{name}__{part}" for part in _PURCHASE_PARTS]
    out += [f"all__count_{n}d" for n in config.windows_days]
    out.append("all__days_since_last")
    out += [f"all__distinct_types_{n}d" for n in config.windows_days]
    out += [f"value__sum_{n}d" for n in config.windows_days]
    out += [f"value__max_{n}d" for n in config.windows_days]
    out += ["tenure_days", f"all__momentum_{config.momentum_days}d"]
    if config.account_features:
        out += [f"account__active_contacts_{n}d" for n in config.windows_days]
        out += [f"account__count_{n}d" for n in config.windows_days]
        out.append("account__contacts")
    return out


_PURCHASE_PARTS = ("rfm_frequency", "rfm_recency_days", "rfm_tenure_days", "rfm_monetary", "value_total")


def _lifetime_columns(config: FeatureConfig, name: str) -> list[str]:
    out = []
    if config.lifetime_features:
        out += [f"{name}__count_total", f"{name}__days_since_first", f"{name}__mean_gap_days"]
    if config.trend_windows is not None:
        short, long = config.trend_windows
        out.append(f"{name}__trend_{short}d_{long}d")
    return out


# --------------------------------------------------------------------------- the mirror


class _Log:
    """One contact's events, appended in any order; arrays rebuilt lazily after an append."""

    __slots__ = ("ts", "code", "value", "account", "_arrays")

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

    __slots__ = ("number", "ts", "_arrays")

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
            days.append(T // _US_PER_DAY - ts[keep] // _US_PER_DAY)  # UTC calendar days back
        cat = (lambda parts, dtype: np.concatenate(parts) if parts else np.empty(0, dtype))
        r_, age, k, v, day = (cat(rows, "int64"), cat(ages, "int64"), cat(codes, "int64"),
                              cat(values, "float64"), cat(days, "int64"))
        g, G = r_ * K1 + k, R * K1
        age_days = age.astype("float64") / _US_PER_DAY  # as the build: DOUBLE(age) / us per day
        windows = sorted({*cfg.windows_days, cfg.momentum_days, 2 * cfg.momentum_days})
        counts = {n: np.bincount(g, weights=(age <= n * _US_PER_DAY), minlength=G).reshape(R, K1).round()
                  .astype("int64") for n in windows}
        min_age = np.full(G, _NO_AGE, dtype="int64")
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
            sel = (age <= n * _US_PER_DAY) & (k < self._other)
            unique = np.unique(g[sel] * span + day[sel])
            active[n] = np.bincount(unique // span, minlength=G).reshape(R, K1)
        for j, name in enumerate(plan.names.values()):
            for n in cfg.windows_days:
                out[f"{name}__count_{n}d"] = counts[n][:, j]
            out[f"{name}__days_since_last"] = _days(min_age[:, j])
            for i, h in enumerate(cfg.half_lives_days):
                out[f"{name}__decayed_{_fmt(h)}d"] = decayed[i][:, j]
            for n in cfg.resolved_active_days_windows:
                out[f"{name}__active_days_{n}d"] = active[n][:, j].astype("int64")
            if cfg.lifetime_features:
                n_all, first, last = total[:, j], max_age[:, j], min_age[:, j]
                out[f"{name}__count_total"] = n_all.astype("int64")
                out[f"{name}__days_since_first"] = np.where(first < 0, np.nan, first.astype("float64") / _US_PER_DAY)
                with np.errstate(invalid="ignore", divide="ignore"):
                    gap = (first - last).astype("float64") / _US_PER_DAY / (n_all - 1).astype("float64")
                out[f"{name}__mean_gap_days"] = np.where(n_all > 1, gap, np.nan)
            if cfg.trend_windows is not None:
                short, long = cfg.trend_windows
                recent, within = counts[short][:, j], counts[long][:, j]
                with np.errstate(invalid="ignore", divide="ignore"):
                    ratio = (recent * long).astype("float64") / (within * short).astype("float64")
                out[f"{name}__trend_{short}d_{long}d"] = np.where(within > 0, ratio, np.nan)
            if j in self._monetary:
                out.update(_purchase_summary(name, r_[k == j], day[k == j], v[k == j], R, T))
        for n in cfg.windows_days:
            out[f"all__count_{n}d"] = counts[n].sum(axis=1)
        out["all__days_since_last"] = _days(min_age.min(axis=1))
        named = self._other
        for n in cfg.windows_days:
            out[f"all__distinct_types_{n}d"] = (counts[n][:, :named] > 0).sum(axis=1).astype("int64")
        has_value = ~np.isnan(v)
        for n in cfg.windows_days:
            sel = (age <= n * _US_PER_DAY) & has_value
            out[f"value__sum_{n}d"] = np.bincount(r_[sel], weights=v[sel], minlength=R)
        for n in cfg.windows_days:
            sel = (age <= n * _US_PER_DAY) & has_value
            top = np.full(R, -np.inf)
            np.maximum.at(top, r_[sel], v[sel])
            out[f"value__max_{n}d"] = np.where(np.bincount(r_[sel], minlength=R) > 0, top, np.nan)
        max_age = np.full(R, -1, dtype="int64")
        np.maximum.at(max_age, r_, age)
        out["tenure_days"] = np.where(max_age < 0, np.nan, max_age.astype("float64") / _US_PER_DAY)
        m = cfg.momentum_days
        recent, within = counts[m].sum(axis=1), counts[2 * m].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            momentum = (recent - (within - recent)).astype("float64") / within.astype("float64")
        out[f"all__momentum_{m}d"] = np.where(within == 0, 0.0, momentum)
        accounts = [self._account(c, T) for c in contacts]
        if plan.uses_accounts:
            stats = {a: self._account_stats(a, T) for a in dict.fromkeys(accounts) if a is not None}
            for name in _account_columns(cfg):  # 0 without an account, as the build fills
                out[name] = np.array([stats[a][name] if a is not None else 0 for a in accounts], dtype="int64")
        for name in plan.attributes:
            values_ = [self._contacts[c].traits.get(name) if c in self._contacts else None for c in contacts]
            if name in plan.categorical:
                out[name] = np.array(values_, dtype=object)
            else:
                out[name] = np.array([_number(x) for x in values_], dtype="float64")
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
        sel = np.flatnonzero((ts < T) & (account != None))  # noqa: E711 - elementwise on objects
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
        recent = np.full(len(active), _NO_AGE, dtype="int64")
        np.minimum.at(recent, np.searchsorted(active, who_), age)
        out = {f"account__active_contacts_{n}d": int((recent <= n * _US_PER_DAY).sum()) for n in cfg.windows_days}
        out.update({f"account__count_{n}d": int((age <= n * _US_PER_DAY).sum()) for n in cfg.windows_days})
        out["account__contacts"] = len(known.union(active.tolist()))
        return out


def _purchase_summary(name: str, rows: np.ndarray, day: np.ndarray, value: np.ndarray, R: int, T: int
                      ) -> dict[str, np.ndarray]:
    """The build's repeat-purchase summaries of one type: per row and UTC day first, then per row."""
    value = np.where(np.isnan(value), 0.0, value)  # a NULL value adds nothing, as the build's fill
    width = int(day.max()) + 1 if len(day) else 1
    keys, where = np.unique(rows * width + day, return_inverse=True)
    day_value = np.bincount(where, weights=value, minlength=len(keys))
    key_row, key_day = keys // width, keys % width
    days = np.bincount(key_row, minlength=R)
    first = np.full(R, -1, dtype="int64")
    np.maximum.at(first, key_row, key_day)
    last = np.full(R, np.iinfo(np.int64).max, dtype="int64")
    np.minimum.at(last, key_row, key_day)
    is_first = key_day == first[key_row]
    first_value = np.bincount(key_row[is_first], weights=day_value[is_first], minlength=R)
    total = np.bincount(key_row, weights=day_value, minlength=R)
    bought = days > 0
    midnight = 1 if T % _US_PER_DAY == 0 else 0  # the observation ends the day before a midnight
    frequency = np.where(bought, days - 1, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        monetary = np.where(days > 1, (total - first_value) / (days - 1), 0.0)
    return {
        f"{name}__rfm_frequency": frequency,
        f"{name}__rfm_recency_days": np.where(bought, first - last, np.nan),
        f"{name}__rfm_tenure_days": np.where(bought, first - midnight, np.nan),
        f"{name}__rfm_monetary": np.where(bought, monetary, np.nan),
        f"{name}__value_total": total,
    }


def _account_columns(cfg: FeatureConfig) -> list[str]:
    return ([f"account__active_contacts_{n}d" for n in cfg.windows_days]
            + [f"account__count_{n}d" for n in cfg.windows_days] + ["account__contacts"])


def _days(age_us: np.ndarray) -> np.ndarray:
    return np.where(age_us == _NO_AGE, np.nan, age_us.astype("float64") / _US_PER_DAY)


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class LearnedView:
    """A contact's learned score at one instant."""

    contact_id: str
    as_of: datetime
    probability: float
    learned_score: float
    learned_band: str | None


class LearnedScores:
    """The champion plus the mirror its features are computed from; safe across threads.

    Parameters
    ----------
    scorer : propensity.pipelines.training.scorer.LearnedScorer
    label : str
        What was loaded (e.g. ``propensity@champion v3``), shown by the service.
    """

    def __init__(self, scorer: Any, label: str = "") -> None:
        self.scorer = scorer
        self.label = label
        self.plan = FeaturePlan.from_scorer(scorer)
        self.mirror = EventMirror(self.plan)
        self._lock = threading.Lock()
        bands = (scorer.metadata or {}).get("bands") or []
        self._band_names = [str(name) for name, _ in bands]
        self._band_edges = np.array([float(edge) for _, edge in bands])

    def load(self, engine: sa.Engine) -> int:
        with engine.connect() as conn, self._lock:
            return self.mirror.load(conn)

    def record(self, events: Iterable[EventRow], updates: Iterable[ContactUpdate]) -> None:
        with self._lock:
            self.mirror.record(events, updates)

    def features(self, contacts: Sequence[str], as_of: datetime) -> pd.DataFrame:
        with self._lock:
            return self.mirror.feature_frame(contacts, as_of)

    def score(self, contacts: Sequence[str], as_of: datetime) -> dict[str, LearnedView]:
        """Learned scores of ``contacts`` at ``as_of``: one feature pass, one predict."""
        if not contacts:
            return {}
        with self._lock:
            out, _ = self.mirror.feature_arrays(contacts, as_of)
        probability, learned = self._predict(out)
        bands = self._bands(learned)
        return {
            c: LearnedView(c, as_of, float(p), float(s), b)
            for c, p, s, b in zip(contacts, probability, learned, bands)
        }

    def _predict(self, out: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``LearnedScorer.score`` on arrays: the matrix ``model_array`` makes, without pandas.

        Per commit the DataFrame route cost ~30 ms of per-column pandas overhead for one row;
        the steps are the scorer's own (raw_probability_of, calibrated; compiled trees when asked), and the tests
        check the result against ``propensity score --model``.
        """
        from propensity.pipelines.training.model import (
            category_codes,  # lightgbm is loaded by now (the scorer)
        )

        scorer = self.scorer
        matrix = np.empty((len(next(iter(out.values()))), len(scorer.feature_names)), dtype="float64", order="F")
        for j, name in enumerate(scorer.feature_names):
            categories = scorer.categories.get(name)
            matrix[:, j] = out[name] if categories is None else category_codes(out[name], categories)
        # one thread: a few rows do not pay for waking LightGBM's OpenMP pool (same numbers)
        return scorer.calibrated(scorer.raw_probability_of(matrix, num_threads=1))

    def reasons(self, contact: str, as_of: datetime, n: int = 3) -> list[dict[str, Any]]:
        """The ``n`` feature groups raising the contact's learned score most, in 0-5 points.

        LightGBM's ``pred_contrib`` through :func:`propensity.pipelines.explain.explain_contacts` (the
        numbers ``propensity explain`` shows), for one row: about a millisecond of trees.
        """
        from propensity.pipelines.explain import explain_contacts, top_reasons

        frame = self.features([contact], as_of)
        explanation = explain_contacts(self.scorer, frame, method="pred_contrib", with_facts=False)
        row = top_reasons(explanation, n, positive_only=True).iloc[0]
        out = []
        for k in range(1, n + 1):
            text = row.get(f"reason_{k}")
            if text is None or pd.isna(text):
                break
            out.append({"reason": str(text), "points": float(row[f"reason_{k}_points"])})
        return out

    def _bands(self, scores: np.ndarray) -> list[str | None]:
        if not self._band_names:
            return [None] * len(scores)
        index = np.searchsorted(self._band_edges, scores, side="right") - 1  # as assign_bands
        return [self._band_names[i] for i in np.clip(index, 0, len(self._band_names) - 1)]


class ModelLocationError(ValueError):
    """A registered model whose artifacts are not in this workspace's MLflow store."""


def load_registered_scorer(workspace: str | Path, model: str = "champion", model_name: str = "propensity",
                           *, allow_external: bool = False):
    """The registered model's scorer from the workspace's MLflow store, or None when none is registered.

    Returns ``(scorer, label)``. Loading a model runs its pickled code (MLflow pyfunc models are
    cloudpickled), so the artifacts must lie inside the workspace's own artifact folder
    (``<workspace>/mlartifacts``): a registry entry pointing elsewhere (another workspace, a
    shared or remote store) is refused with :class:`ModelLocationError` unless
    ``allow_external`` (serve config ``allow_external_model: true``).
    """
    workspace = Path(workspace)
    if not (workspace / "mlflow.db").exists() and not _tracking_env():
        return None  # nothing was ever trained here (and MLflow's import is not paid)
    import mlflow
    from mlflow.tracking import MlflowClient

    from propensity.pipelines.training.tracking import configure_tracking

    configure_tracking(workspace, None, "propensity")
    client = MlflowClient()
    try:
        if model.isdigit():
            version = client.get_model_version(model_name, model)
        else:
            version = client.get_model_version_by_alias(model_name, model)
    except mlflow.exceptions.MlflowException:
        return None
    location = client.get_model_version_download_uri(model_name, version.version)
    label = f"{model_name}@{model} v{version.version}"
    if not allow_external:
        check_model_location(location, workspace, label)
    # the location checked is the one loaded (not the registry name again)
    pyfunc = mlflow.pyfunc.load_model(location)
    return pyfunc.unwrap_python_model().scorer, label


def check_model_location(location: str, workspace: Path, label: str = "the model") -> None:
    """Raise :class:`ModelLocationError` unless ``location`` (a URI) is a folder inside
    ``<workspace>/mlartifacts``, symlinks resolved."""
    from urllib.parse import unquote, urlsplit

    root = (workspace / "mlartifacts").resolve()
    parts = urlsplit(location)
    inside = False
    if parts.scheme in ("", "file") and parts.netloc in ("", "localhost"):
        inside = Path(unquote(parts.path)).resolve().is_relative_to(root)
    if not inside:
        raise ModelLocationError(
            f"{label}: its artifacts are at {location}, outside this workspace's MLflow store ({root}). "
            "Serving a model runs its pickled code, so only models trained into this workspace are "
            "loaded; to serve this one anyway, trust its source and set allow_external_model: true "
            "in the serve config (--config), or serve rules only with --model none"
        )


def _tracking_env() -> bool:
    return bool(os.environ.get("MLFLOW_TRACKING_URI"))
