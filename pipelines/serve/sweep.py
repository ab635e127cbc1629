"""The writer's incremental decay sweep, and when each contact is next due for one.

Between events a score only decays, so most contacts need no look at all. Each stored score
carries ``next_due``, a time at or before which its band, a trigger's level or an expiry may be
reached (:meth:`RuleScorer.next_due_us`), capped by the refresh interval; a sweep reads only the
contacts that are due, in chunks, and puts itself back on the writer's queue after each chunk,
so event commits are not held behind it.

:class:`Sweeping` holds the sweep's steps as methods of the writer (it runs in the writer's
thread, with the writer's connection, cache and lock): see :class:`propensity.pipelines.serve.worker.Writer`.
"""

from __future__ import annotations

import contextlib
import logging
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
from propensity.pipelines.serve.cache import load_entries
from propensity.pipelines.serve.ingest import ContactUpdate, EventRow
from propensity.pipelines.serve.state import (
    ContactState,
    RuleScorer,
    ScoreView,
    from_micros,
    to_micros,
)

__all__ = ["Job", "Sweeping", "score_change", "trigger_levels"]

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One item of the writer's queue: rows to commit (answered by ``future``), or a sweep."""

    rows: Sequence[EventRow | ContactUpdate] = ()
    future: Future = field(default_factory=Future)
    sweep: bool = False
    # a sweep in progress: the instant it looks at (contacts due by then) and what it did so far
    sweep_at: datetime | None = None
    swept: int = 0
    due: list[str] = field(default_factory=list)  # contacts read as due, not looked at yet
    more_due: bool = False  # the last read of due contacts was cut at its limit


class Sweeping:
    """The sweep's steps, mixed into the writer (whose attributes they use)."""

    def _do_sweep(self, job: Job) -> None:
        try:
            more = self._sweep_chunk(job)
        except Exception as exc:
            log.exception("score sweep failed")
            self._drop_connection()
            with self.lock:  # cached states it moved may be ahead of the database
                for contact in self._sweeping:
                    self._cache.pop(contact, None)
            job.future.set_exception(exc)
            return
        if more:
            # the rest after a pause (three times the chunk's time at sweep_duty 0.25): the request
            # handlers share the GIL with this thread, and a writer busy without a break starves
            # them (each of their I/O waits costs a GIL switch interval); event commits queued
            # meanwhile run at once
            pause = self._chunk_seconds * (1 - self.sweep_duty) / self.sweep_duty
            timer = threading.Timer(pause, self._queue.put, (job,))
            timer.daemon = True
            timer.start()
        else:
            job.future.set_result(job.swept)

    def _sweep_chunk(self, job: Job) -> bool:
        started, self._sweeping = time.perf_counter(), []
        try:
            return self._sweep_chunk_now(job)
        finally:
            self._chunk_seconds = time.perf_counter() - started
            if self._sweeping:
                # time-sliced: the next chunk is as many contacts as this one's pace fits in
                # sweep_slice_seconds, so a chunk never holds event commits (and the GIL) for
                # longer than about that, however slow a contact is on this machine or store
                per_contact = self._chunk_seconds / len(self._sweeping)
                fits = int(self.sweep_slice_seconds / per_contact) if per_contact > 0 else self.sweep_chunk
                self._sweep_size = max(1, min(self.sweep_chunk, fits))

    def _sweep_chunk_now(self, job: Job) -> bool:
        """Bring up to ``_sweep_size`` due contacts to now; report decay-only changes to triggers.

        A contact is due when its ``next_due`` is at or before the instant the sweep started:
        contacts it schedules again get a later ``next_due``, so each is seen once per sweep.
        ``job.swept`` counts the contacts whose stored score changed. True when more may be due.
        """
        now = self._now()
        if job.sweep_at is None:
            job.sweep_at = now
        size = self._sweep_size
        c = db.score_state.c
        conn = self._connection()
        with conn.begin():
            if not job.due:
                # due contacts are read many chunks at a time: on a large store the read itself
                # took longer than a time slice (a fresh PostgreSQL table without statistics
                # scanned it all), so one per chunk made the sweep hold event commits again. A
                # contact rescheduled by an event meanwhile is brought to now all the same
                # (harmless: the same state, a new next_due)
                limit = max(20 * self.sweep_chunk, 2_000)
                job.due = list(conn.execute(
                    sa.select(c.contact_id).where(c.next_due <= job.sweep_at).order_by(c.next_due).limit(limit)
                ).scalars())
                job.more_due = len(job.due) == limit
            ids, job.due = job.due[:size], job.due[size:]
            if not ids:
                return False
            self._sweeping = ids
            with self.lock:
                entries = {contact: self._cache.get(contact) for contact in ids}
            cached = {contact: entry is not None for contact, entry in entries.items()}
            # a contact out of the cache is read, brought up to date and written back, but not
            # cached: a sweep must not evict the contacts that are sending events
            entries.update(load_entries(conn, self.scorer, [k for k, e in entries.items() if e is None], now))
            views = {}
            # the lock only around cached states (a score request may peek at them); the others
            # are this chunk's own, and holding it longer would stall the request handlers
            for contact in ids:
                entry = entries[contact]
                with self.lock if cached.get(contact) else contextlib.nullcontext():
                    earlier = self.scorer.view(contact, entry.state) if entry.score is not None else None
                    self._advance(entry.state, now)
                    views[contact] = self.scorer.view(contact, entry.state)
                    if earlier is not None and views[contact].rule_score != entry.score:  # time alone
                        entry.last_split = split_rule_views(self.scorer.rules, earlier, views[contact],
                                                            views[contact], self.scorer.scale)
            changed = [k for k in ids if not (entries[k].score is not None and views[k].rule_score == entries[k].score
                                              and views[k].points == entries[k].points)]
            fired = []
            if self.triggers is not None and changed:
                changes = [score_change(k, now, (entries[k].score, entries[k].band, entries[k].points), views[k], [],
                                        entries[k].last_split) for k in changed]
                for firing in self.triggers.sweep(conn, changes):
                    self.metrics.triggers.labels(firing.trigger, "sweep").inc()
                    fired.append(firing)
            rows = []
            for contact in ids:
                with self.lock if cached.get(contact) else contextlib.nullcontext():
                    rows.append(self._stored(conn, entries[contact], views[contact], now))
            db.upsert(conn, db.score_state, rows, "contact_id")
        self._explain_firings(fired, now)  # committed: their messages get the learned split
        job.swept += len(changed)
        self.metrics.swept.inc(len(ids))
        return bool(job.due) or job.more_due


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


def trigger_levels(triggers: Any, scorer: RuleScorer) -> list[float]:
    """The point totals at which a threshold trigger may fire (bands are the scorer's levels)."""
    if triggers is None:
        return []
    out = []
    for measure, threshold in triggers.thresholds:
        out.append(threshold if measure == "points" else scorer.points_for_score(threshold))
    return [x for x in out if x == x and abs(x) != float("inf")]



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
