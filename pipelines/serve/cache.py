"""The writer's contacts in memory: score states in a least-recently-used map over the store.

The database holds the truth, so an evicted contact is read back on its next event or score
request, with the same state and score (anyone who can send events, which a public write key
allows, could otherwise grow the memory with new ``userId``s).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import cachetools
import orjson
import sqlalchemy as sa

from propensity.pipelines.serve import db
from propensity.pipelines.serve.state import ContactState, RuleScorer

__all__ = ["ContactCache", "ContactEntry", "dump_state", "load_entries", "read_entry"]


def dump_state(state: ContactState) -> str:
    """A state as stored: JSON, by orjson (the stdlib's encoder was ~6% of a batch commit), or by
    the stdlib for what orjson refuses (a trait integer over 64 bits)."""
    content = state.to_json()
    try:
        return orjson.dumps(content).decode()
    except orjson.JSONEncodeError:
        return json.dumps(content)


@dataclass
class ContactEntry:
    """A cached contact: its score state and the last stored score."""

    state: ContactState
    score: float | None = None
    points: float | None = None
    band: str | None = None
    changed_at: datetime | None = None
    previous_score: float | None = None
    # why the last change happened: propensity.pipelines.rules.change.split_rule_views
    last_split: dict | None = None


class ContactCache(cachetools.LRUCache):
    """The writer's contacts, least recently used evicted first; counts its evictions."""

    def __init__(self, maxsize: int, on_evict: Callable[[], None] | None = None) -> None:
        super().__init__(maxsize)
        self.evictions = 0
        self._on_evict = on_evict

    def popitem(self):  # cachetools calls this to make room (its documented extension point)
        item = super().popitem()
        self.evictions += 1
        if self._on_evict is not None:
            self._on_evict()
        return item



def _entry(row: sa.Row, scorer: RuleScorer) -> ContactEntry:
    return ContactEntry(
        ContactState.from_json(json.loads(row.state), len(scorer.rules.activities)),
        score=row.rule_score, points=row.points, band=row.band,
        changed_at=row.changed_at, previous_score=row.previous_score,
        last_split=json.loads(row.last_split) if row.last_split else None,
    )


def load_entries(conn: sa.Connection, scorer: RuleScorer, contacts: list[str], now: datetime
                 ) -> dict[str, ContactEntry]:
    """The stored state of ``contacts`` (an empty one at ``now`` for a contact never stored)."""
    if not contacts:
        return {}
    found = {}
    for chunk_start in range(0, len(contacts), 500):
        chunk = contacts[chunk_start : chunk_start + 500]
        rows = conn.execute(sa.select(db.score_state).where(db.score_state.c.contact_id.in_(chunk)))
        for row in rows:
            found[row.contact_id] = row
    return {contact: (_entry(found[contact], scorer) if contact in found else ContactEntry(scorer.new_state(now)))
            for contact in contacts}


def read_entry(conn: sa.Connection, scorer: RuleScorer, contact_id: str) -> ContactEntry | None:
    """The stored state of one contact; None if it was never stored."""
    row = conn.execute(sa.select(db.score_state).where(db.score_state.c.contact_id == contact_id)).first()
    return None if row is None else _entry(row, scorer)
