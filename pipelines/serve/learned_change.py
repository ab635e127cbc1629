"""Why the learned score changed, in the service: the states of ``explain --since`` from its own data.

The split is :func:`propensity.pipelines.explain.change.split_learned_change` (the one that
``propensity explain CONTACT --since DATE`` runs), between the two instants of the rule score's
last change (``last_change.split``: ``since``, the previous score, and ``until``, the change). Its
four feature states come from what the service holds, not from the workspace:

* events: the event mirror, cut at ``since`` or ``until`` by timestamp, evaluated at either
  (:meth:`EventMirror.feature_frame`'s ``events_before``), so an event stamped at or after
  ``until`` moves nothing;
* the rules' columns (``rule__*``, a model trained with ``rule_inputs: true``): the contact's stored
  events replayed through the service's rule scorer, once per state (a few microseconds per event);
* attributes: the traits as they were at each instant. The mirror keeps only the latest traits, so
  :class:`TraitHistory` keeps, for each contact, the values the model reads before each of its last
  few changes (and since when they are known: the service's start, or the oldest change kept).
  What is not known is said in the split's ``notes``, and taken as it is now (fit part 0), as
  ``explain --since`` does without ``--contacts-before``.

The model part is 0: one model per process. Computed lazily (on ``GET .../score``, and for a
trigger's message when it fires), never per event.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from propensity.pipelines.serve import db
from propensity.pipelines.serve.state import (
    ContactState,
    RuleScorer,
    from_micros,
    to_micros,
)

__all__ = ["HOLD_SECONDS", "TraitHistory", "explain_firings", "learned_change_split", "learned_split_json",
           "replayed_state", "stored_events"]

log = logging.getLogger(__name__)

# how long a trigger's message waits in the outbox for its learned split (explain_firings releases
# it at once; only a service that stops in between lets the hold run out: sent without the split)
HOLD_SECONDS = 60.0

KEPT_CHANGES = 4  # per contact: the last changes of the traits the model reads


class TraitHistory:
    """Per contact, the values of some traits before each of its last :data:`KEPT_CHANGES` changes.

    Parameters
    ----------
    names : sequence of str
        The traits kept (those the model reads); changes of other traits are not recorded.
    known_from_us : int
        Since when the current traits are known (the instant the service loaded them).
    """

    def __init__(self, names: Iterable[str], known_from_us: int) -> None:
        self.names = tuple(dict.fromkeys(names))
        self.known_from_us = known_from_us
        self._changes: dict[str, deque[tuple[int, dict[str, Any]]]] = {}
        self._cut: dict[str, int] = {}  # contact -> the change time of the oldest one dropped

    def record(self, contact: str, before: Mapping[str, Any], after: Mapping[str, Any], at_us: int) -> None:
        """One identify update at ``at_us``: kept when a kept trait changed value."""
        old = {k: before[k] for k in self.names if k in before}
        new = {k: after[k] for k in self.names if k in after}
        if old == new:
            return
        changes = self._changes.setdefault(contact, deque())
        if len(changes) == KEPT_CHANGES:
            self._cut[contact] = changes.popleft()[0]
        changes.append((at_us, old))

    def at(self, contact: str, at_us: int, current: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """The kept traits as they were at ``at_us`` (a change at ``at_us`` counts), and whether known."""
        for change_us, before in self._changes.get(contact, ()):
            if change_us > at_us:  # the first change after at_us: what it replaced was in force
                return dict(before), at_us >= self._cut.get(contact, self.known_from_us)
        return {k: current[k] for k in self.names if k in current}, at_us >= self._cut.get(contact,
                                                                                              self.known_from_us)

    def lost_before(self, contact: str) -> bool:
        """Whether older changes of this contact were dropped (so its history before them is unknown)."""
        return contact in self._cut


def stored_events(conn: sa.Connection, contact: str, before: datetime) -> list[tuple[datetime, str, float, Any]]:
    """The contact's stored events stamped before ``before``: ``(ts, event_type, value, properties)``."""
    e = db.events.c
    rows = conn.execute(sa.select(e.ts, e.event_type, e.value, e.properties)
                        .where(e.contact_id == contact, e.ts < before).order_by(e.ts))
    return [(row.ts, row.event_type, 1.0 if row.value is None else float(row.value),
             orjson.loads(row.properties) if row.properties else None) for row in rows]


def replayed_state(rules: RuleScorer, events: Sequence[tuple[datetime, str, float, Any]], events_before: datetime,
                   at: datetime, traits: Mapping[str, Any]) -> ContactState:
    """A rule state at ``at`` from ``events`` stamped before ``events_before``, with ``traits``."""
    state = rules.new_state(at)
    cut = to_micros(events_before)
    for ts, event_type, value, properties in events:
        if to_micros(ts) < cut:
            rules.apply(state, ts, event_type, value, properties)
    state.traits = dict(traits)
    return state


def learned_change_split(learned: Any, conn: sa.Connection, contact: str, since: datetime,
                         until: datetime) -> dict:
    """The learned score's change of ``contact`` from ``since`` to ``until``, split as ``explain --since``.

    ``learned``: the service's :class:`propensity.pipelines.serve.learned.LearnedScores`. Returns
    :func:`propensity.pipelines.explain.change_jobs.split_json`'s shape, with ``since`` and ``until``.

    Raises
    ------
    propensity.pipelines.serve.mirror.MirrorHorizonError
        ``since`` is before the mirror's horizon (the features then read folded events).
    """
    from propensity.pipelines.explain.change import split_learned_change
    from propensity.pipelines.explain.change_jobs import split_json

    notes = []
    history = learned.history
    # before: as they were just before the commit at `until` (no commit touched the contact between
    # `since` and it, or `since` would be later; and `since` may be `until`, the same instant, when
    # two commits of one instant follow each other); after: with that commit's changes
    moments = (to_micros(until) - 1, to_micros(until))
    with learned.consistent():  # the writer records traits meanwhile
        current = learned.mirror.traits_of(contact)
        found = [history.at(contact, at_us, current) for at_us in moments]
        lost = history.lost_before(contact)
    attributes = []
    for at_us, (values, known) in zip(moments, found):
        if not known and not lost:
            # the traits loaded at start are those of the contact's latest identify, stored with its time
            updated = conn.execute(sa.select(db.contacts.c.updated_at)
                                   .where(db.contacts.c.contact_id == contact)).scalar()
            known = updated is None or to_micros(updated) <= at_us
        if not known:
            notes.append(f"attributes {'before' if len(attributes) == 0 else 'at'} {until.isoformat()}: not known to "
                         f"the service (it keeps the last {KEPT_CHANGES} changes of each contact's traits since it "
                         f"started, at {from_micros(history.known_from_us).isoformat()}); taken as the earliest it knows")
        attributes.append(values)
    rule_events = stored_events(conn, contact, until) if learned.reads_rules else []
    path = [(since, since, attributes[0]), (since, until, attributes[0]), (until, until, attributes[0]),
            (until, until, attributes[1])]
    states = []
    with learned.consistent():  # the four states of one mirror; the split's model calls run after
        for events_before, at, traits in path:
            rule_states = None
            if learned.reads_rules:
                rule_states = {contact: replayed_state(learned.rules, rule_events, events_before, at, traits)}
            states.append(learned.features([contact], at, rule_states, events_before=events_before,
                                           traits={contact: traits}))
    split = split_learned_change(learned.scorer, states, since=since, until=until, notes=notes)
    return {"since": since.isoformat(), "until": until.isoformat(), **split_json(split, 0)}


def explain_firings(learned: Any, engine: sa.Engine | sa.Connection, firings: Iterable[Any], now: datetime) -> int:
    """Complete the messages of trigger firings (queued on hold, committed) with the learned split of
    their change, and release them; returns how many were amended.

    ``firings``: :class:`propensity.pipelines.activation.triggers.Firing`; a held-out one (not in
    the outbox) is skipped. The split is the one ``GET .../score`` gives (``learned_split``), between
    the instants of the rule split the message carries (``why_now.change_split``).
    """
    from propensity.pipelines.activation.outbox import amend
    from propensity.pipelines.serve.mirror import MirrorHorizonError

    queued = [f for f in firings if f.outbox_id is not None]
    if not queued:
        return 0
    amended = 0
    with (engine.connect() if isinstance(engine, sa.Engine) else contextlib.nullcontext(engine)) as conn, \
            conn.begin():  # the splits' reads and the amends: one transaction
        for firing in queued:
            payload = copy.deepcopy(firing.payload)
            why = payload["why_now"]
            rule = why.get("change_split")
            split, note = None, None
            if rule is None:
                note = "no earlier score to compare with (the contact's first score)"
            else:
                try:
                    split = learned.change_split(conn, firing.contact_id, datetime.fromisoformat(rule["since"]),
                                                 datetime.fromisoformat(rule["until"]))
                except MirrorHorizonError as exc:
                    note = str(exc)
                except Exception:  # the message goes out all the same, saying so
                    log.exception("the learned change split of firing %s failed", firing.idempotency_key)
                    note = "the split failed (the service log says why)"
            why["learned_change_split"] = split
            why.pop("learned_change_split_note", None)
            if note is not None:
                why["learned_change_split_note"] = note
            amended += amend(conn, firing.outbox_id, payload, now)
    return amended


def learned_split_json(learned: Any, engine: sa.Engine, contact: str, rule_split: dict | None) -> dict[str, Any]:
    """``learned_split``: the learned score's change between the instants of the rule score's last
    change, split as ``explain --since`` (computed here, on request: never per event); and, when it
    cannot be computed, ``learned_split_note`` saying why."""
    from propensity.pipelines.serve.mirror import MirrorHorizonError

    if rule_split is None:
        return {"learned_split": None}
    since, until = datetime.fromisoformat(rule_split["since"]), datetime.fromisoformat(rule_split["until"])
    try:
        with engine.connect() as conn:
            return {"learned_split": learned.change_split(conn, contact, since, until)}
    except MirrorHorizonError as exc:  # the last change is older than the model's longest window
        return {"learned_split": None, "learned_split_note": str(exc)}
    except Exception:  # the score stands without it
        log.exception("the learned change split for %s failed", contact)
        return {"learned_split": None, "learned_split_note": "the split failed (the service log says why)"}
