"""Score triggers: a threshold or band crossed upwards, or a score that dropped, each with a cooldown.

Triggers are configured in YAML (``configs/triggers.yaml``), validated once into a frozen
:class:`TriggersConfig`. The service calls :meth:`TriggerEngine.evaluate` with every
:class:`ScoreChange` inside the transaction that stores the event, so a firing is written to the
outbox exactly when the event is committed; a periodic :meth:`TriggerEngine.sweep` passes changes
that come from decay alone (no event), which is how most drops are found.

Deduplication: every firing has a *crossing key* (trigger + contact + which crossing: the instant
a threshold was crossed, or the peak a drop is measured from), stored with a unique constraint;
the same crossing never fires twice, however often it is evaluated. The crossing key is also the
message's idempotency key, so receivers can drop a redelivered message.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from propensity.pipelines.activation.holdout import (
    HoldoutConfig,
    assign,
    record_exposure,
)
from propensity.pipelines.activation.outbox import RetryPolicy, enqueue
from propensity.pipelines.activation.tables import (
    insert_ignore,
    score_history,
    trigger_firings,
)
from propensity.pipelines.config_files import load_yaml_config

__all__ = [
    "BandEntered",
    "Delivery",
    "Firing",
    "ScoreChange",
    "ScoreDropped",
    "ThresholdCrossed",
    "TriggerEngine",
    "TriggersConfig",
    "TriggersConfigError",
    "load_triggers",
]


class TriggersConfigError(ValueError):
    """A triggers file that cannot be read or does not validate; the message names the file."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Trigger(_Frozen):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str | None = None
    # a contact that fired this trigger is not fired again for this long (0: every crossing fires)
    cooldown_hours: float = Field(default=0.0, ge=0)


class ThresholdCrossed(_Trigger):
    """Fires when ``measure`` goes from below ``threshold`` to at or above it (e.g. becomes a PQL).

    ``measure`` is ``score`` (the 0-5 intent score) or ``points`` (the raw rule total, which is
    what the rules' ``thresholds`` such as ``pql: 75`` are in).
    """

    kind: Literal["threshold_crossed"]
    measure: Literal["score", "points"] = "score"
    threshold: float


class BandEntered(_Trigger):
    """Fires when the band goes from a lower band than ``band`` to ``band`` or higher."""

    kind: Literal["band_entered"]
    band: str


class ScoreDropped(_Trigger):
    """Fires when the 0-5 score is at least ``by`` below its peak of the last ``within_days``."""

    kind: Literal["score_dropped"]
    by: float = Field(gt=0)
    within_days: float = Field(gt=0)


Trigger = Annotated[ThresholdCrossed | BandEntered | ScoreDropped, Field(discriminator="kind")]


class Delivery(_Frozen):
    """Where firings go and how hard delivery tries; the URL and secret are read from the environment."""

    url_env: str = "PROPENSITY_WEBHOOK_URL"
    secret_env: str = "PROPENSITY_WEBHOOK_SECRET"
    max_attempts: int = Field(default=8, ge=1)
    initial_backoff_seconds: float = Field(default=5.0, gt=0)
    max_backoff_seconds: float = Field(default=3600.0, gt=0)
    backoff_multiplier: float = Field(default=2.0, ge=1)
    timeout_seconds: float = Field(default=10.0, gt=0)

    def policy(self) -> RetryPolicy:
        """The retry schedule :func:`propensity.pipelines.activation.outbox.deliver_due` follows."""
        return RetryPolicy(max_attempts=self.max_attempts, initial_seconds=self.initial_backoff_seconds,
                           max_seconds=self.max_backoff_seconds, multiplier=self.backoff_multiplier)


class TriggersConfig(_Frozen):
    """Triggers plus the band order (lowest first) that ``band_entered`` compares with.

    ``holdout`` (optional): the share of contacts whose firings are recorded but never sent,
    and who are left out of ``propensity push`` (see :mod:`propensity.pipelines.activation.holdout`).
    """

    bands: tuple[str, ...] = ()
    delivery: Delivery = Delivery()
    triggers: tuple[Trigger, ...] = ()
    holdout: HoldoutConfig | None = None

    @field_validator("bands")
    @classmethod
    def _unique_bands(cls, bands: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(bands)) != len(bands):
            raise ValueError(f"bands must be unique: {list(bands)}")
        return bands

    @model_validator(mode="after")
    def _consistent(self) -> TriggersConfig:
        names = [t.name for t in self.triggers]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"trigger names must be unique: {duplicated}")
        for trigger in self.triggers:
            if isinstance(trigger, BandEntered) and trigger.band not in self.bands:
                raise ValueError(f"trigger {trigger.name!r}: band {trigger.band!r} is not one of bands "
                                 f"{list(self.bands)} (list them lowest first)")
        unknown = sorted(set(self.holdout.triggers or ()) - set(names)) if self.holdout else []
        if unknown:
            raise ValueError(f"holdout.triggers names no trigger of this file: {unknown} (triggers: {names})")
        return self


def load_triggers(path: str | Path) -> TriggersConfig:
    """Read and validate a triggers YAML file.

    Raises
    ------
    TriggersConfigError
        When the file is missing, is not YAML, or does not validate; the message names the file
        and every offending key (unknown keys are errors).
    """
    return load_yaml_config(path, TriggersConfig, TriggersConfigError, not_found='triggers file not found',
                            invalid='invalid triggers')


@dataclass(frozen=True)
class ScoreChange:
    """One contact's score before and after something happened at ``at`` (UTC, naive).

    ``before_*`` is ``None`` for a contact seen for the first time. ``events`` are the events that
    moved the score (canonical dicts: event_type, ts, value, event_id); empty for decay alone.
    """

    contact_id: str
    at: dt.datetime
    before_score: float | None
    after_score: float
    before_band: str | None
    after_band: str
    points_before: float | None
    points_after: float
    events: list[dict] = dataclasses.field(default_factory=list)
    # the split of the score's last change (propensity.pipelines.rules.change.split_rule_views)
    split: dict | None = None


@dataclass(frozen=True)
class Firing:
    """A trigger that fired, as queued in the outbox (``outbox_id``) with its payload.

    ``held_out``: the contact is in the holdout, so the firing is recorded but not queued
    (``outbox_id`` is None).
    """

    trigger: str
    kind: str
    contact_id: str
    at: dt.datetime
    idempotency_key: str
    payload: dict
    outbox_id: int | None
    held_out: bool = False


@dataclass(frozen=True)
class _Crossing:
    """What a trigger saw: the part of the key that names this crossing and the details for why-now."""

    key: str
    details: dict


class TriggerEngine:
    """Evaluates the configured triggers on score changes and queues firings in the outbox.

    Parameters
    ----------
    config
        The validated triggers configuration.
    """

    def __init__(self, config: TriggersConfig, *, hold_seconds: float = 0.0) -> None:
        self.config = config
        # firings wait this long in the outbox unless released sooner (the service completes their
        # payload with the learned score's change split once the commit is done)
        self.hold_seconds = hold_seconds
        self._rank = {band: i for i, band in enumerate(config.bands)}
        drops = [t for t in config.triggers if isinstance(t, ScoreDropped)]
        # history only needs to reach back as far as the longest drop window
        self._history_days = max((t.within_days for t in drops), default=None)

    @property
    def thresholds(self) -> list[tuple[str, float]]:
        """``(measure, threshold)`` of every threshold trigger (``score`` or ``points``)."""
        return [(t.measure, t.threshold) for t in self.config.triggers if isinstance(t, ThresholdCrossed)]

    @property
    def drop_triggers(self) -> list[ScoreDropped]:
        return [t for t in self.config.triggers if isinstance(t, ScoreDropped)]

    def drop_levels(self, conn: sa.Connection, contact_id: str, at: dt.datetime, score: float) -> list[float]:
        """The scores at which each drop trigger would fire for this contact, from ``at`` on.

        The peak is the highest of its window now (or the score itself); as the window slides the
        peak can only fall, so these are the highest such levels: a sweep scheduled by them is
        never late.
        """
        out = []
        for trigger in self.drop_triggers:
            peak = _peak(conn, contact_id, at - dt.timedelta(days=trigger.within_days), at)
            out.append(max(score, peak[1] if peak is not None else score) - trigger.by)
        return out

    def evaluate(self, conn: sa.Connection, change: ScoreChange) -> list[Firing]:
        """Evaluate every trigger on one event-driven change, in the caller's transaction.

        Records the change in the score history (when a drop trigger needs it) and writes any
        firing to the outbox on ``conn``; nothing is committed here.
        """
        change = _normalised(change)
        if self._history_days is not None:
            self._record_peak(conn, change)
        return self._fire(conn, change)

    def sweep(self, conn: sa.Connection, changes: Iterable[ScoreChange]) -> list[Firing]:
        """Evaluate changes that come from decay alone (``before`` at the last look, ``after`` now).

        Decayed values are not added to the history: between events a score only decays, so its
        peak in any window is at an event, which :meth:`evaluate` has recorded.
        """
        firings: list[Firing] = []
        for change in changes:
            firings.extend(self._fire(conn, _normalised(change)))
        return firings

    # -- internals ------------------------------------------------------------------------------

    def _fire(self, conn: sa.Connection, change: ScoreChange) -> list[Firing]:
        firings = []
        for trigger in self.config.triggers:
            crossing = self._crossing(conn, trigger, change)
            if crossing is None:
                continue
            firing = self._queue(conn, trigger, change, crossing)
            if firing is not None:
                firings.append(firing)
        return firings

    def _crossing(self, conn: sa.Connection, trigger: _Trigger, change: ScoreChange) -> _Crossing | None:
        if isinstance(trigger, ThresholdCrossed):
            before, after = ((change.before_score, change.after_score) if trigger.measure == "score"
                             else (change.points_before, change.points_after))
            if (before is None or before < trigger.threshold) and after >= trigger.threshold:
                return _Crossing(f"up@{change.at.isoformat()}",
                                 {"measure": trigger.measure, "threshold": trigger.threshold})
            return None
        if isinstance(trigger, BandEntered):
            target = self._rank[trigger.band]
            before = -1 if change.before_band is None else self._band_rank(change.before_band, change)
            if before < target <= self._band_rank(change.after_band, change):
                return _Crossing(f"up@{change.at.isoformat()}", {"band": trigger.band})
            return None
        assert isinstance(trigger, ScoreDropped)
        peak = _peak(conn, change.contact_id, change.at - dt.timedelta(days=trigger.within_days), change.at)
        if change.before_score is not None and (peak is None or change.before_score > peak[1]):
            peak = (change.at, change.before_score)
        if peak is None or peak[1] - change.after_score < trigger.by:
            return None
        # the peak names the crossing: a contact that stays down is not fired again by every sweep
        return _Crossing(f"peak@{peak[0].isoformat()}",
                         {"by": trigger.by, "within_days": trigger.within_days,
                          "peak": {"score": peak[1], "at": _iso(peak[0])},
                          "dropped_by": round(peak[1] - change.after_score, 6)})

    def _band_rank(self, band: str, change: ScoreChange) -> int:
        try:
            return self._rank[band]
        except KeyError:
            raise ValueError(f"contact {change.contact_id!r}: band {band!r} is not one of the triggers' "
                             f"bands {list(self.config.bands)}") from None

    def _queue(self, conn: sa.Connection, trigger: _Trigger, change: ScoreChange,
               crossing: _Crossing) -> Firing | None:
        key = crossing_key(trigger.name, change.contact_id, crossing.key)
        if trigger.cooldown_hours > 0:
            last = conn.execute(_LAST_FIRED, {"trigger": trigger.name, "contact_id": change.contact_id}).scalar()
            if last is not None and change.at - last < dt.timedelta(hours=trigger.cooldown_hours):
                return None
        # the primary key is the dedup: this crossing fired already (or a concurrent transaction
        # is firing it) when the insert is ignored
        if not insert_ignore(conn, trigger_firings, {"crossing_key": key, "trigger": trigger.name,
                                                      "contact_id": change.contact_id, "fired_at": change.at}):
            return None
        payload = why_now_payload(trigger, change, crossing.details, key)
        if self.hold_seconds:  # what it says if the service stops before it is completed (and released)
            payload["why_now"] |= {"learned_change_split": None, "learned_change_split_note": PENDING_NOTE}
        holdout = self.config.holdout
        held_out = False
        if holdout is not None and holdout.covers(trigger.name):
            held_out = assign(conn, holdout, [change.contact_id], change.at)[change.contact_id]
            record_exposure(conn, holdout, trigger.name, change.contact_id, change.after_band, change.at, held_out)
        if held_out:
            return Firing(trigger=trigger.name, kind=trigger.kind, contact_id=change.contact_id, at=change.at,
                          idempotency_key=key, payload=payload, outbox_id=None, held_out=True)
        outbox_id = enqueue(conn, idempotency_key=key, kind="trigger", payload=payload,
                            trigger=trigger.name, contact_id=change.contact_id, now=change.at,
                            hold_seconds=self.hold_seconds)
        return Firing(trigger=trigger.name, kind=trigger.kind, contact_id=change.contact_id, at=change.at,
                      idempotency_key=key, payload=payload, outbox_id=outbox_id)

    def _record_peak(self, conn: sa.Connection, change: ScoreChange) -> None:
        """Keep, per contact, only the points that can still be a window's peak.

        A point is dropped once a later point is at least as high (it can never be the maximum of
        a window that ends now) or once it is older than the longest window, so the rows left are
        falling in score over time and a window's peak is simply its oldest row.
        """
        value = change.after_score if change.before_score is None else max(change.before_score, change.after_score)
        horizon = change.at - dt.timedelta(days=self._history_days)
        conn.execute(_DELETE_DOMINATED, {"contact_id": change.contact_id, "score": value, "horizon": horizon})
        conn.execute(_INSERT_POINT, {"contact_id": change.contact_id, "at": change.at, "score": value})


PENDING_NOTE = "not computed: the service stopped between the commit and the split"


def crossing_key(trigger: str, contact_id: str, crossing: str) -> str:
    """A stable key for one crossing of one trigger by one contact (also the idempotency key)."""
    return hashlib.sha256(f"{trigger}\x1f{contact_id}\x1f{crossing}".encode()).hexdigest()[:40]


def why_now_payload(trigger: _Trigger, change: ScoreChange, details: dict, key: str) -> dict:
    """The message a firing sends: which trigger, which contact, and why now."""
    return {
        "type": "propensity.trigger",
        "idempotency_key": key,
        "trigger": trigger.name,
        "kind": trigger.kind,
        "contact_id": change.contact_id,
        "fired_at": _iso(change.at),
        "why_now": {
            "score_before": change.before_score,
            "score_after": change.after_score,
            "band_before": change.before_band,
            "band_after": change.after_band,
            "points_before": change.points_before,
            "points_after": change.points_after,
            **details,
            "events": [_jsonable(e) for e in change.events],
            # why the score moved since its previous stored value (split["before"]): new events per
            # type, decay and expiry, attributes; parts sum to split["change"]
            "change_split": change.split,
        },
    }


# The per-change statements run inside the service's event commit, so they are prepared once as
# text: building and cache-keying a Core statement on every call cost more than running it.
_H = score_history.name
_DELETE_DOMINATED = sa.text(
    f"DELETE FROM {_H} WHERE contact_id = :contact_id AND (score <= :score OR at < :horizon)"
).bindparams(sa.bindparam("score", type_=sa.Float), sa.bindparam("horizon", type_=sa.DateTime))
_INSERT_POINT = sa.text(
    f"INSERT INTO {_H} (contact_id, at, score) VALUES (:contact_id, :at, :score)"
).bindparams(sa.bindparam("at", type_=sa.DateTime), sa.bindparam("score", type_=sa.Float))
_PEAK = sa.text(
    f"SELECT at, score FROM {_H} WHERE contact_id = :contact_id AND at >= :since AND at <= :until "
    "ORDER BY score DESC, at DESC LIMIT 1"
).bindparams(sa.bindparam("since", type_=sa.DateTime), sa.bindparam("until", type_=sa.DateTime)
             ).columns(at=sa.DateTime, score=sa.Float)


_LAST_FIRED = sa.text(
    f"SELECT MAX(fired_at) AS last_fired FROM {trigger_firings.name} "
    "WHERE trigger = :trigger AND contact_id = :contact_id"
).columns(last_fired=sa.DateTime)


def _peak(conn: sa.Connection, contact_id: str, since: dt.datetime,
          until: dt.datetime) -> tuple[dt.datetime, float] | None:
    row = conn.execute(_PEAK, {"contact_id": contact_id, "since": since, "until": until}).first()
    return None if row is None else (row.at, float(row.score))


def _normalised(change: ScoreChange) -> ScoreChange:
    at = change.at
    if at.tzinfo is not None:
        at = at.astimezone(dt.UTC).replace(tzinfo=None)
    return dataclasses.replace(change, at=at) if at is not change.at else change


def _iso(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


def _jsonable(event: dict) -> dict:
    # round-trip through JSON so datetimes (and numpy scalars) become plain values now, not at send
    return json.loads(json.dumps(event, default=lambda v: _iso(v) if isinstance(v, dt.datetime) else str(v)))
