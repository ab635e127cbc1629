"""A holdout for triggers and pushes: a stable share of contacts is never acted on.

A contact's group is a hash of the experiment name and its id (:func:`held_out_by_hash`), so it
is the same on every run, every machine and both databases without any coordination, and a new
experiment name reshuffles everyone. The first time a contact is seen its group is recorded in
``activation_holdout_assignments``; from then on the recorded group is the one used, so raising
the share later adds new contacts to the holdout but never moves one that is already in a group
(its earlier exposures would otherwise count in the wrong arm).

Held-out contacts are still evaluated: their trigger firings are recorded (and deduplicated and
cooled down exactly like the treated ones') but never queued in the outbox, and their traits are
not pushed. Every first firing or push, treated or held out, is an *exposure*
(``activation_holdout_exposures``) with the contact's band at that moment; ``propensity lift``
compares the conversion of the two arms after it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from propensity.pipelines.activation.tables import (
    holdout_assignments,
    holdout_exposures,
    insert_ignore,
)
from propensity.pipelines.sqldb import dialect_insert

__all__ = [
    "HoldoutConfig",
    "assign",
    "hash_unit",
    "held_out_by_hash",
    "record_exposure",
    "record_exposures",
]


class HoldoutConfig(BaseModel):
    """Who is held out of triggers and pushes, and how ``propensity lift`` counts a conversion.

    ``experiment`` names the hash (change it to draw a new holdout); ``share`` of the contacts
    is held out; ``triggers`` lists the triggers it applies to (default: all); ``push`` says
    whether held-out contacts are also left out of ``propensity push``. ``window_days`` is how
    long after an exposure a conversion counts, and ``outcome`` which outcome does (default:
    any row of the outcomes table).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    experiment: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128)
    share: float = Field(gt=0, lt=1)
    triggers: tuple[str, ...] | None = None
    push: bool = True
    window_days: float = Field(default=30.0, gt=0)
    outcome: str | None = None

    def covers(self, trigger: str) -> bool:
        """Whether this holdout applies to the trigger named ``trigger``."""
        return self.triggers is None or trigger in self.triggers


def hash_unit(experiment: str, contact_id: str) -> float:
    """A number in [0, 1) fixed by experiment and contact: the first 8 bytes of a SHA-256."""
    digest = hashlib.sha256(f"{experiment}\x1f{contact_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def held_out_by_hash(experiment: str, contact_id: str, share: float) -> bool:
    """The group the hash gives (used the first time a contact is seen)."""
    return hash_unit(experiment, contact_id) < share


def assign(conn: sa.Connection, config: HoldoutConfig, contact_ids: Iterable[str],
           at: dt.datetime) -> dict[str, bool]:
    """``contact_id -> held out?`` for every contact: the recorded group, else the hash's (recorded now).

    Runs on the caller's connection (the trigger path: inside the event's transaction).
    """
    ids = list(dict.fromkeys(str(c) for c in contact_ids))
    if not ids:
        return {}
    groups: dict[str, bool] = {}
    t = holdout_assignments
    for start in range(0, len(ids), 500):  # bounded IN lists
        chunk = ids[start:start + 500]
        rows = conn.execute(sa.select(t.c.contact_id, t.c.held_out).where(
            t.c.experiment == config.experiment, t.c.contact_id.in_(chunk))).all()
        groups.update({r.contact_id: bool(r.held_out) for r in rows})
    new = [{"experiment": config.experiment, "contact_id": c, "share": config.share, "assigned_at": at,
            "held_out": held_out_by_hash(config.experiment, c, config.share)} for c in ids if c not in groups]
    if new:
        if len(new) == 1:
            insert_ignore(conn, t, new[0])
        else:
            conn.execute(dialect_insert(conn.dialect.name, t).on_conflict_do_nothing(), new)
        # re-read: a concurrent writer may have recorded some of them first, and its group stands
        for start in range(0, len(new), 500):
            chunk = [row["contact_id"] for row in new[start:start + 500]]
            rows = conn.execute(sa.select(t.c.contact_id, t.c.held_out).where(
                t.c.experiment == config.experiment, t.c.contact_id.in_(chunk))).all()
            groups.update({r.contact_id: bool(r.held_out) for r in rows})
    return {c: groups[c] for c in ids}


def record_exposure(conn: sa.Connection, config: HoldoutConfig, source: str, contact_id: str,
                    band: str | None, at: dt.datetime, held_out: bool) -> bool:
    """Record the first exposure of ``contact_id`` to ``source``; False when one was recorded before."""
    return insert_ignore(conn, holdout_exposures, {
        "experiment": config.experiment, "source": source, "contact_id": contact_id, "band": band,
        "at": at, "held_out": held_out})


def record_exposures(conn: sa.Connection, config: HoldoutConfig, source: str,
                     rows: Sequence[tuple[str, str | None, bool]], at: dt.datetime) -> None:
    """Record first exposures of many ``(contact_id, band, held_out)`` at once (a push run)."""
    if rows:
        conn.execute(dialect_insert(conn.dialect.name, holdout_exposures).on_conflict_do_nothing(), [
            {"experiment": config.experiment, "source": source, "contact_id": c, "band": band, "at": at,
             "held_out": held} for c, band, held in rows])
