"""The incremental decay sweep, in a thread of its own, and when each contact is next due for one.

Between events a score only decays, so most contacts need no look at all. Each stored score
carries ``next_due``, a time at or before which its band, a trigger's level or an expiry may be
reached (:meth:`RuleScorer.next_due_us`), capped by the refresh interval; a sweep reads only the
contacts that are due, in chunks.

The sweep does not run in the writer: :class:`Sweeper` reads each chunk's due contacts and their
stored state on a connection of its own and brings them to now there (the database round trips
and the CPU work of a chunk), then hands the writer only the rows to store. The writer applies
them between event commits, in a short transaction, skipping any contact an event commit touched
since the chunk was read (that commit stored a later state, with its own ``next_due``): the
writer stays the one writer of ``score_state``, so nothing is written from a stale read, and on
PostgreSQL a chunk costs event commits one statement and a commit instead of every round trip
of the chunk (measured: at 1M contacts the in-writer sweep left ingest behind its load).

:class:`Sweeping` holds the writer's side (applying a chunk, ``next_due``): see
:class:`propensity.pipelines.serve.worker.Writer`.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from propensity.pipelines.activation.triggers import ScoreChange
from propensity.pipelines.rules.change import split_rule_views
from propensity.pipelines.serve import db
from propensity.pipelines.serve.cache import ContactEntry, load_entries
from propensity.pipelines.serve.ingest import ContactUpdate, EventRow
from propensity.pipelines.serve.state import (
    ContactState,
    RuleScorer,
    ScoreView,
    from_micros,
    to_micros,
)

__all__ = ["Job", "Sweeper", "Sweeping", "SweptChunk", "score_change", "trigger_levels"]

log = logging.getLogger(__name__)


@dataclass
class SweptChunk:
    """One chunk brought to now by the sweeper, for the writer to store."""

    now: datetime
    rows: list[dict[str, Any]]  # score_state rows, one per contact looked at
    entries: dict[str, ContactEntry]  # the same contacts' new entries (for those the cache holds)
    changes: list[ScoreChange]  # decay-only score changes, for the triggers
    changed: set[str]  # contacts whose stored score changed


@dataclass
class Job:
    """One item of the writer's queue: rows to commit (answered by ``future``), or a swept chunk."""

    rows: Sequence[EventRow | ContactUpdate] = ()
    future: Future = field(default_factory=Future)
    swept: SweptChunk | None = None


class Sweeping:
    """The writer's side of the sweep, mixed into the writer (whose attributes it uses)."""

    def _apply_sweep(self, job: Job) -> None:
        """Store a swept chunk, but not the contacts an event commit touched since it was read."""
        chunk, started = job.swept, time.perf_counter()
        with self.lock:
            stale, self._touched = self._touched or set(), None
        rows = [r for r in chunk.rows if r["contact_id"] not in stale]
        conn = self._connection()
        try:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    # no wait for the WAL flush: a sweep's rows can be computed again. Lost in a
                    # crash, they are lost with the firings of the same transaction (the contacts
                    # stay due and the next sweep redoes both); a firing that was delivered is on
                    # disk, as delivery's own commit flushes the WAL before it
                    conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                changes = [c for c in chunk.changes if c.contact_id not in stale]
                fired = []
                if self.triggers is not None and changes:
                    for firing in self.triggers.sweep(conn, changes):
                        self.metrics.triggers.labels(firing.trigger, "sweep").inc()
                        fired.append(firing)
                db.upsert(conn, db.score_state, rows, "contact_id")
        except Exception as exc:
            log.exception("storing a sweep chunk failed")
            self._drop_connection()
            job.future.set_exception(exc)
            return
        self._explain_firings(fired, chunk.now)  # committed: their messages get the learned split
        with self.lock:  # stored: a cached contact gets its swept entry (not cached: not added)
            for row in rows:
                contact = row["contact_id"]
                if contact in self._cache:
                    self._cache[contact] = chunk.entries[contact]
        self.metrics.swept.inc(len(rows))
        changed = sum(1 for r in rows if r["contact_id"] in chunk.changed)
        job.future.set_result((changed, time.perf_counter() - started))

    def _next_due(self, conn: sa.Connection, state: ContactState, view: ScoreView) -> datetime | None:
        """When the sweep must look at this contact again (None: time alone changes nothing)."""
        levels = self._levels
        if self._drops:  # a drop fires at (peak in its window) - by: a level of this contact's own
            drop = [self.scorer.points_for_score(s)
                    for s in self.triggers.drop_levels(conn, view.contact_id, view.as_of, view.rule_score)]
            levels = [*levels, *drop]
        due, decays = self.scorer.next_due_us(state, view.points, levels)
        if decays:  # the stored score itself is brought up to date now and then
            refresh = to_micros(view.as_of + self.refresh)
            due = refresh if due is None else min(due, refresh)
        if due is None:
            return None
        return from_micros(max(due, state.at_us + 1))  # strictly later: a sweep never sees it twice


_STOP = object()


class Sweeper(db.KeptConnection):
    """The sweep's thread: reads due contacts, brings them to now, hands the rows to the writer.

    Parameters
    ----------
    writer
        The :class:`propensity.pipelines.serve.worker.Writer` (its scorer, clock, cache lock, queue).
    chunk : int
        Contacts one chunk looks at, at most.
    slice_seconds : float
        About the most CPU time one chunk may take (the request handlers share the GIL with this
        thread): the next chunk holds as many contacts as the last one's pace fits in this.
    duty : float
        The share of the time a sweep with many contacts due may take (0-1]: after each chunk it
        pauses ``(1 - duty) / duty`` times the chunk's time.
    """

    def __init__(self, writer: Any, chunk: int, slice_seconds: float, duty: float) -> None:
        self.writer, self.chunk, self.slice_seconds, self.duty = writer, chunk, slice_seconds, duty
        self._size = min(chunk, 20)  # the first chunk's; then time-sliced
        self._queue: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="propensity-sweep", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the chunk in hand (a sweep in progress answers with what it did)."""
        if self._thread is None:
            return
        self._stopping.set()
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def request(self) -> Future:
        future: Future = Future()
        self._queue.put(future)
        return future

    def _run(self) -> None:
        try:
            while (future := self._queue.get()) is not _STOP:
                try:
                    future.set_result(self._sweep())
                except Exception as exc:
                    log.exception("score sweep failed")
                    self._drop_connection()
                    future.set_exception(exc)
        finally:
            self._drop_connection()

    def _connection_engine(self) -> sa.Engine:
        return self.writer.engine

    def _sweep(self) -> int:
        """Bring every contact due by now to now; the number whose stored score changed.

        A contact is due when its ``next_due`` is at or before the instant the sweep started:
        the rows it stores have a later ``next_due``, so each is seen once per sweep.
        """
        sweep_at = self.writer._now()
        due: list[str] = []
        more, swept = True, 0
        while not self._stopping.is_set():
            if not due and more:
                # many chunks' worth at a time: on a large store one read took longer than a chunk
                # (a fresh PostgreSQL table without statistics scanned it all). A contact stored by
                # an event meanwhile is skipped by the writer
                limit = max(20 * self.chunk, 2_000)
                c = db.score_state.c
                conn = self._connection()
                with conn.begin():
                    due = list(conn.execute(sa.select(c.contact_id).where(c.next_due <= sweep_at)
                                            .order_by(c.next_due).limit(limit)).scalars())
                more = len(due) == limit
            if not due:
                break
            ids, due = due[: self._size], due[self._size:]
            self._yield_to_events()
            cpu = time.thread_time()
            chunk = self._chunk(ids)
            spent = time.thread_time() - cpu  # this thread's CPU: what it took from the GIL
            changed, storing = self.writer.store_swept(chunk).result()
            swept += changed
            self._resize(spent + storing, len(ids))
            # the rest after a pause (three times the chunk's cost at duty 0.25): the request
            # handlers share the GIL with this thread, and event commits wait while the writer
            # stores a chunk
            if self._stopping.wait((spent + storing) * (1 - self.duty) / self.duty):
                break
        return swept

    def _yield_to_events(self, most: float = 1.0) -> None:
        """Start a chunk only when no event waits for the writer (or after ``most`` seconds).

        Ingest comes first: a chunk's reads and CPU compete with event commits for the cores and
        the database (measured on PostgreSQL at 1M contacts under load: a sweep paced only by its
        own CPU time left ingest behind its offered rate), so the sweep takes the writer's idle
        moments; under a writer that is never idle it still moves, one chunk a second. It waits
        on the writer's event, not by polling: a thread waking every few milliseconds takes the
        GIL from the request handlers each time.
        """
        self.writer.events_idle.wait(most)

    def _resize(self, spent: float, looked: int) -> None:
        # time-sliced: the next chunk is as many contacts as this one's pace fits in
        # slice_seconds, so a chunk never holds the GIL, nor the writer while it stores the
        # chunk, for longer than about that, however slow a contact is on this machine or store
        per_contact = spent / looked
        fits = int(self.slice_seconds / per_contact) if per_contact > 0 else self.chunk
        self._size = max(1, min(self.chunk, fits))

    def _chunk(self, ids: list[str]) -> SweptChunk:
        """Read ``ids``' stored state (on this thread's connection) and bring it to now."""
        writer, scorer = self.writer, self.writer.scorer
        with self.writer.lock:  # from here on the writer records the contacts it commits
            writer._touched = set()
        now = writer._now()
        conn = self._connection()
        with conn.begin():
            entries = load_entries(conn, scorer, ids, now)
            views, changes, changed, rows = {}, [], set(), []
            for contact in ids:
                entry = entries[contact]
                earlier = scorer.view(contact, entry.state) if entry.score is not None else None
                writer._advance(entry.state, now)
                views[contact] = view = scorer.view(contact, entry.state)
                if earlier is not None and view.rule_score != entry.score:  # time alone
                    entry.last_split = split_rule_views(scorer.rules, earlier, view, view, scorer.scale)
                if not (entry.score is not None and view.rule_score == entry.score and view.points == entry.points):
                    changed.add(contact)
                    changes.append(score_change(contact, now, (entry.score, entry.band, entry.points), view, [],
                                                entry.last_split))
                rows.append(writer._stored(conn, entry, view, now))  # reads drop levels on this connection
        return SweptChunk(now, rows, entries, changes if writer.triggers is not None else [], changed)


def trigger_levels(triggers: Any, scorer: RuleScorer) -> list[float]:
    """The point totals at which a threshold trigger may fire (bands are the scorer's levels)."""
    if triggers is None:
        return []
    out = []
    for measure, threshold in triggers.thresholds:
        out.append(threshold if measure == "points" else scorer.points_for_score(threshold))
    return [x for x in out if math.isfinite(x)]


def score_change(
    contact: str,
    now: datetime,
    before: tuple[float, str, float] | None,
    after: ScoreView,
    events: list[EventRow],
    split: dict | None = None,
) -> ScoreChange:
    """The trigger engine's view of one score change; ``before`` is (score, band, points) or None."""
    score, band, points = before if before is not None else (None, None, None)
    return ScoreChange(
        contact_id=contact,
        at=now,
        before_score=score,
        after_score=after.rule_score,
        before_band=band,
        after_band=after.band,
        points_before=points,
        points_after=after.points,
        events=[{"event_id": e.event_id, "event_type": e.event_type, "ts": e.ts, "value": e.value} for e in events],
        split=split,
    )
