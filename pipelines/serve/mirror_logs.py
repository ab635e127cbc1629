"""The event mirror's per-contact and per-account records (:mod:`propensity.pipelines.serve.mirror`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from propensity.pipelines.serve.feature_plan import NO_AGE

__all__ = ["AccountLog", "ContactInfo", "EventLog"]


class EventLog:
    """One contact's events, appended in any order; arrays rebuilt lazily after an append."""

    __slots__ = ("_arrays", "account", "code", "oldest", "ts", "value")

    def __init__(self) -> None:
        self.oldest = NO_AGE  # the earliest ts held (the fold's heap is keyed on it)
        self.ts: list[int] = []
        self.code: list[int] = []
        self.value: list[float] = []
        self.account: list[str | None] = []
        self._arrays: tuple[np.ndarray, ...] | None = None

    def add(self, ts_us: int, code: int, value: float | None, account: str | None) -> None:
        self.oldest = min(self.oldest, ts_us)
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


class AccountLog:
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
class ContactInfo:
    account: str | None = None  # the contacts table's, which wins over the events'
    created_us: int | None = None
    traits: dict[str, Any] = field(default_factory=dict)
