"""The single writer: group commits of events, incremental rescoring, triggers, and the sweep.

Request handlers put their parsed rows on a queue and wait on a future. One thread takes
everything queued (up to ``max_batch_events``) and commits it in ONE transaction: new events
(``messageId`` already stored -> skipped), contact traits, each touched contact's new score
state, and any trigger firings. Only then are the waiting requests answered, so an event is
acknowledged exactly when it is durable, and a commit's cost is shared by every request in it.

With a registered model (``learned``, :mod:`propensity.pipelines.serve.learned`), the committed rows are
then added to the in-memory event mirror and the touched contacts get their learned score at
the commit's time: one feature pass and one LightGBM predict per commit, not per event.

Scores are kept in memory (a cache of :class:`ContactState`, loaded from ``score_state`` on
first use) and written back with every commit, in a least-recently-used map of at most
``cache_contacts`` contacts (:mod:`propensity.pipelines.serve.cache`). If a commit fails, the
contacts it touched are dropped from the cache, so they are reloaded from what the database holds.

The sweep (decay-only changes, for drop triggers and the stored score) reads and computes in a
thread of its own; this thread stores what it found between commits, skipping the contacts a
commit touched meanwhile: :mod:`propensity.pipelines.serve.sweep`.
"""

from __future__ import annotations

import copy
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from propensity.pipelines.rules.change import split_rule_views
from propensity.pipelines.serve import db
from propensity.pipelines.serve.cache import (
    ContactCache,
    ContactEntry,
    dump_state,
    load_entries,
    read_entry,
)
from propensity.pipelines.serve.db import contact_record, event_record
from propensity.pipelines.serve.ingest import ContactUpdate, EventRow
from propensity.pipelines.serve.learned import LearnedScores, LearnedView
from propensity.pipelines.serve.learned_change import explain_firings
from propensity.pipelines.serve.metrics import ServiceMetrics
from propensity.pipelines.serve.state import (
    ContactState,
    RuleScorer,
    ScoreView,
    from_micros,
)
from propensity.pipelines.serve.sweep import (
    Job,
    Sweeper,
    Sweeping,
    SweptChunk,
    score_change,
    trigger_levels,
)

__all__ = ["CommitResult", "ContactCache", "ContactEntry", "Writer", "is_permanent", "utcnow"]

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    """The current time, naive UTC (as every stored timestamp)."""
    return datetime.now(UTC).replace(tzinfo=None)


def is_permanent(exc: BaseException) -> bool:
    """Whether a failed commit would fail again with the same rows (the client must not retry).

    Data the database refuses (too long, a NUL, a constraint) and values the writer cannot
    serialise fail every retry; a lost connection or a locked database may not.
    """
    return isinstance(exc, sa.exc.DataError | sa.exc.IntegrityError | ValueError | TypeError | OverflowError)


@dataclass(frozen=True)
class CommitResult:
    """What one request's rows did once committed."""

    stored: int
    duplicates: int
    scores: dict[str, ScoreView]
    learned: dict[str, LearnedView] = field(default_factory=dict)


_STOP = object()


class Writer(Sweeping, db.KeptConnection):
    """Owns every write to the service database.

    Parameters
    ----------
    engine : sqlalchemy.Engine
    scorer : RuleScorer
    metrics : ServiceMetrics
    triggers : optional
        A ``propensity.pipelines.activation.triggers.TriggerEngine``; None runs without triggers.
    max_batch_events : int
        Most events one commit takes from the queue.
    commit_delay : float
        Seconds a commit waits for more requests after the first (group commit).
    clock : callable
        Returns naive UTC now (tests pass a fixed clock).
    learned : LearnedScores, optional
        The registered model and its event mirror (already loaded); None: rule scores only.
    cache_contacts : int
        Contacts kept in memory at most (least recently used evicted; the database has them).
    refresh_seconds : float
        The longest a decaying stored score waits for the sweep to bring it up to date.
    sweep_chunk : int
        Contacts one sweep chunk looks at, at most; event commits run between chunks.
    sweep_slice_seconds : float
        About the most CPU time one sweep chunk may take: its size follows the last chunk's pace
        (at most ``sweep_chunk``).
    sweep_duty : float
        The share of the time a sweep with many contacts due may take (0-1].
    """

    def __init__(
        self,
        engine: sa.Engine,
        scorer: RuleScorer,
        metrics: ServiceMetrics,
        *,
        triggers: Any = None,
        max_batch_events: int = 5_000,
        commit_delay: float = 0.0,
        clock: Callable[[], datetime] = utcnow,
        learned: LearnedScores | None = None,
        cache_contacts: int = 100_000,
        refresh_seconds: float = 86_400.0,
        sweep_chunk: int = 200,
        sweep_duty: float = 0.25,
        sweep_slice_seconds: float = 0.010,
    ) -> None:
        self.engine = engine
        self.scorer = scorer
        self.metrics = metrics
        self.triggers = triggers
        self.max_batch_events = max_batch_events
        self.commit_delay = commit_delay
        self.clock = clock
        self.learned = learned
        self.lock = threading.Lock()  # guards the cache: the writer mutates, readers peek
        self._count_lock = threading.Lock()  # guards the queued-events count
        self._cache = ContactCache(cache_contacts, on_evict=metrics.cache_evictions.inc)
        metrics.cache_capacity.set(cache_contacts)
        self.refresh = timedelta(seconds=refresh_seconds)
        # the point totals at which something stored or fired moves by a step, for every contact
        self._levels = sorted({*scorer.levels(), *trigger_levels(triggers, scorer)})
        self._drops = bool(triggers is not None and triggers.drop_triggers)
        # while a sweep chunk is out (read, not stored yet): the contacts committed since its read
        self._touched: set[str] | None = None
        self._sweeper = Sweeper(self, sweep_chunk, sweep_slice_seconds, sweep_duty)
        self._clock_lock = threading.Lock()  # the writer and the sweeper both read the clock
        self._queue: queue.Queue = queue.Queue()
        self._queued_events = 0
        self.events_idle = threading.Event()  # set while no event waits for a commit (the sweep waits for it)
        self.events_idle.set()
        self._thread: threading.Thread | None = None
        self._last_at: datetime | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="propensity-writer", daemon=True)
        self._thread.start()
        self._sweeper.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop."""
        if self._thread is None:
            return
        self._sweeper.stop(timeout)  # first: a chunk in hand is stored by this thread
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def submit(self, rows: Sequence[EventRow | ContactUpdate]) -> Future:
        """Queue rows for the next commit; the future gets a :class:`CommitResult`."""
        job = Job(rows=rows)
        # not self.lock: the request handlers' event loop must never wait for the writer's work
        with self._count_lock:
            self._queued_events += len(rows)
            self.events_idle.clear()
            self.metrics.queue_depth.set(self._queued_events)
        self._queue.put(job)
        return job.future

    def request_sweep(self) -> Future:
        """Queue a sweep (decay-only score changes -> drop triggers); the future gets the number
        of contacts whose stored score changed."""
        return self._sweeper.request()

    def store_swept(self, chunk: SweptChunk) -> Future:
        """Queue a swept chunk to store; the future gets (scores changed, seconds it took)."""
        job = Job(swept=chunk)
        self._queue.put(job)
        return job.future

    @property
    def queue_depth(self) -> int:
        return self._queued_events

    @property
    def alive(self) -> bool:
        """Whether the writer thread runs (requests would wait forever otherwise)."""
        return self._thread is not None and self._thread.is_alive()

    # ---------------------------------------------------------------- the loop

    def _connection_engine(self) -> sa.Engine:
        return self.engine

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._drop_connection()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            if first.swept is not None:
                self._apply_sweep(first)
                continue
            jobs, size, stop = [first], len(first.rows), False
            # group commit: wait a moment for requests already on their way, so that one
            # commit (and its fsync) serves many of them
            deadline = time.monotonic() + self.commit_delay
            while size < self.max_batch_events:
                try:
                    wait = deadline - time.monotonic()
                    nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP or nxt.swept is not None:
                    stop = nxt is _STOP
                    if nxt is not _STOP:
                        self._queue.put(nxt)  # after this commit
                    break
                jobs.append(nxt)
                size += len(nxt.rows)
            self._do_commit(jobs, size)
            if stop:
                return

    def _now(self) -> datetime:
        # a clock that steps back (NTP) must not move scores back in time
        with self._clock_lock:
            now = self.clock()
            if self._last_at is not None and now < self._last_at:
                now = self._last_at
            self._last_at = now
            return now

    def _advance(self, state: ContactState, now: datetime) -> None:
        # a state stored by a process whose clock ran ahead stays at its own time
        self.scorer.advance(state, max(now, from_micros(state.at_us)))

    def _do_commit(self, jobs: list[Job], size: int) -> None:
        try:
            failure = self._try_commit(jobs)
            if failure is not None and len(jobs) > 1 and is_permanent(failure):
                # one request's rows must not fail the others committed with them: each alone,
                # answered on its own (the bad one gets its own error, the rest are stored)
                log.info("a group commit of %d requests failed: committing each alone", len(jobs))
                for job in jobs:
                    alone = self._try_commit([job])
                    if alone is not None:
                        job.future.set_exception(alone)
            elif failure is not None:
                for job in jobs:
                    job.future.set_exception(failure)
        finally:
            with self._count_lock:
                self._queued_events -= size
                if self._queued_events == 0:
                    self.events_idle.set()
                self.metrics.queue_depth.set(self._queued_events)

    def _try_commit(self, jobs: list[Job]) -> Exception | None:
        """Commit ``jobs`` in one transaction and answer them; the exception if it failed (unanswered)."""
        try:
            results, _ = self._commit(jobs)
        except Exception as exc:  # the DB rolled back
            log.exception("commit of %d events failed", sum(len(j.rows) for j in jobs))
            self._drop_connection()  # a broken connection is not reused
            with self.lock:  # what the cache holds for them may be ahead of the database
                for contact in self._contacts_of(jobs):
                    self._cache.pop(contact, None)
            return exc
        for job, result in zip(jobs, results):
            job.future.set_result(result)
        return None

    @staticmethod
    def _contacts_of(jobs: Iterable[Job]) -> list[str]:
        return list(dict.fromkeys(r.contact_id for j in jobs for r in j.rows))

    # ---------------------------------------------------------------- one commit

    def _commit(self, jobs: list[Job]) -> tuple[list[CommitResult], list[str]]:
        now = self._now()
        unique: dict[str, EventRow] = {}
        for job in jobs:
            for row in job.rows:
                if isinstance(row, EventRow):
                    unique.setdefault(row.event_id, row)
        touched = self._contacts_of(jobs)
        conn = self._connection()
        with conn.begin():
            stored = db.insert_new(
                conn,
                db.events,
                [event_record(e, now) for e in unique.values()],
                "event_id",
            )
            # this commit's contacts in a map of its own: however small the cache, none of them
            # is evicted before its state is written
            with self.lock:
                entries = {c: self._cache.get(c) for c in touched}
            entries.update(load_entries(conn, self.scorer, [c for c, e in entries.items() if e is None], now))
            fresh_by_contact: dict[str, list[EventRow]] = {}
            for event in unique.values():
                if event.event_id in stored:
                    fresh_by_contact.setdefault(event.contact_id, []).append(event)
            updates_by_contact: dict[str, list[ContactUpdate]] = {}
            for job in jobs:
                for row in job.rows:
                    if isinstance(row, ContactUpdate):
                        updates_by_contact.setdefault(row.contact_id, []).append(row)
            views: dict[str, ScoreView] = {}
            changes = []
            with self.lock:
                for contact in touched:
                    fresh = fresh_by_contact.get(contact, [])
                    updates = updates_by_contact.get(contact, [])
                    if not fresh and not updates:
                        continue  # only duplicates: nothing moved
                    entry = entries[contact]
                    earlier = self.scorer.view(contact, entry.state) if entry.score is not None else None
                    self._advance(entry.state, now)
                    before = seen = None
                    if entry.score is not None:
                        # a known contact: its score now, before this batch (triggers compare)
                        seen = self.scorer.view(contact, entry.state)
                        before = (seen.rule_score, seen.band, seen.points)
                    for update in updates:
                        entry.state.traits.update(update.traits)
                    for event in fresh:
                        self.scorer.apply(entry.state, event.ts, event.event_type, event.value, event.props)
                    after = self.scorer.view(contact, entry.state)
                    views[contact] = after
                    if earlier is not None and after.rule_score != entry.score:
                        entry.last_split = split_rule_views(self.scorer.rules, earlier, seen, after, self.scorer.scale)
                    if self.triggers is not None:
                        changes.append(score_change(contact, now, before, after, fresh, entry.last_split))
            fired = []
            if self.triggers is not None:
                for change in changes:
                    for firing in self.triggers.evaluate(conn, change):
                        self.metrics.triggers.labels(firing.trigger, "event").inc()
                        fired.append(firing)
            state_rows = [self._stored(conn, entries[c], view, now) for c, view in views.items()]
            contact_rows = [contact_record(ups, entries[contact].state.traits, now)
                            for contact, ups in updates_by_contact.items() if ups]
            db.upsert(conn, db.contacts, contact_rows, "contact_id", keep_when_null=("account_id", "created_at"))
            db.upsert(conn, db.score_state, state_rows, "contact_id")
        with self.lock:  # committed: now the cache may hold them (evicting the least recent)
            for contact in touched:
                self._cache[contact] = entries[contact]
            if self._touched is not None:  # a sweep chunk read before this commit must not store them
                self._touched.update(touched)
            self.metrics.cache_size.set(len(self._cache))
        learned = self._learn(fresh_by_contact, updates_by_contact, list(views), now,
                              {c: entries[c].state for c in views})
        self._explain_firings(fired, now)
        self.metrics.events.inc(len(stored))
        self.metrics.duplicates.inc(sum(isinstance(r, EventRow) for j in jobs for r in j.rows) - len(stored))
        self.metrics.contacts.inc(sum(len(u) for u in updates_by_contact.values()))
        self.metrics.commit_size.observe(sum(len(j.rows) for j in jobs))
        results = []
        for job in jobs:
            ids = [r.event_id for r in job.rows if isinstance(r, EventRow)]
            # a messageId twice in one request is stored once: the second is a duplicate
            mine = sum(1 for i in dict.fromkeys(ids) if i in stored)
            scores = {r.contact_id: views[r.contact_id] for r in job.rows if r.contact_id in views}
            mine_learned = {c: learned[c] for c in scores if c in learned}
            results.append(CommitResult(mine, len(ids) - mine, scores, mine_learned))
            stored -= set(ids)  # a messageId twice in one commit counts as stored once
        return results, touched

    def _learn(
        self,
        fresh: dict[str, list[EventRow]],
        updates: dict[str, list[ContactUpdate]],
        contacts: list[str],
        now: datetime,
        states: dict[str, ContactState],
    ) -> dict[str, LearnedView]:
        """After the commit: mirror the committed rows, then learned scores of ``contacts`` at ``now``
        (``states``: their rule states, at ``now``: a model may read the rules' columns)."""
        if self.learned is None or not contacts:
            return {}
        try:
            self.learned.record([e for es in fresh.values() for e in es], [u for us in updates.values() for u in us],
                                now)
            return self.learned.score(contacts, now, states)
        except Exception:  # the events are committed: answer them, with rule scores only
            log.exception("learned scoring of %d contacts failed", len(contacts))
            return {}

    def _explain_firings(self, firings: list, now: datetime) -> None:
        """Committed firings, held in the outbox: their learned split added, then released."""
        if self.learned is None or not firings:
            return
        try:
            explain_firings(self.learned, self._connection(), firings, now)
        except Exception:  # the hold runs out: they are sent without it, saying so
            log.exception("completing %d trigger messages failed", len(firings))
            self._drop_connection()

    def _stored(self, conn: sa.Connection, entry: ContactEntry, view: ScoreView, now: datetime) -> dict[str, Any]:
        if entry.score is None or view.rule_score != entry.score:
            entry.previous_score, entry.changed_at = entry.score, now
        entry.score, entry.points, entry.band = view.rule_score, view.points, view.band
        return {
            "contact_id": view.contact_id,
            "state": dump_state(entry.state),
            "scored_at": now,
            "points": view.points,
            "rule_score": view.rule_score,
            "band": view.band,
            "changed_at": entry.changed_at,
            "previous_score": entry.previous_score,
            "next_due": self._next_due(conn, entry.state, view),
            "last_split": json.dumps(entry.last_split) if entry.last_split is not None else None,
        }

    @property
    def cached_contacts(self) -> int:
        """How many contacts the cache holds now."""
        return len(self._cache)

    @property
    def evictions(self) -> int:
        """Contacts evicted from the cache so far."""
        return self._cache.evictions

    # ---------------------------------------------------------------- reads

    def current(self, contact_id: str, at: datetime | None = None) -> tuple[ScoreView, ContactEntry] | None:
        """The contact's score now (or at a later ``at``), without changing anything; None if unknown.

        The entry returned holds a copy of the state moved to the view's instant.
        """
        with self.lock:
            entry = self._cache.get(contact_id)
        if entry is None:
            with self.engine.connect() as conn:
                entry = read_entry(conn, self.scorer, contact_id)
            if entry is None:
                return None
        with self.lock:
            when = at or max(self.clock(), from_micros(entry.state.at_us))
            moved = copy.deepcopy(entry.state)
        self.scorer.advance(moved, when)  # a copy: nothing changes
        view = self.scorer.view(contact_id, moved)
        # the state moved to the view's instant (the learned score may read its rule points)
        snapshot = ContactEntry(moved, entry.score, entry.points, entry.band,
                                entry.changed_at, entry.previous_score, entry.last_split)
        return view, snapshot

