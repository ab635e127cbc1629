"""Bounded memory and an incremental sweep (issue 15, items 2 and 3), on SQLite and PostgreSQL.

The per-contact cache is an LRU over the store: a contact evicted and read back scores exactly
as one that never left memory. The sweep looks only at contacts that are due: a band crossed by
decay alone still fires once, no later than the first sweep after the crossing, the stored band
is right after every sweep, and contacts that are not due are not touched.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from propensity.pipelines.activation.tables import create_activation_tables, outbox
from propensity.pipelines.activation.triggers import TriggerEngine, TriggersConfig
from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.serve import db
from propensity.pipelines.serve.app import ServiceSettings
from propensity.pipelines.serve.config import ServeConfig
from propensity.pipelines.serve.ingest import ContactUpdate, EventRow
from propensity.pipelines.serve.metrics import ServiceMetrics
from propensity.pipelines.serve.state import RuleScorer, from_micros
from propensity.pipelines.serve.worker import Writer
from tests.pipelines.serve.support import WRITE_KEY, fresh_postgres_database, running_server

NOW = datetime(2026, 3, 1, 12, 0, 0)
RULES = RuleSet.model_validate({
    "name": "lru",
    "activities": [
        {"name": "pricing", "event": "page_view", "where": {"path": "/pricing"}, "points": 5,
         "half_life_days": 7, "expires_after_days": 30, "cap": 12},
        {"name": "trial", "event": "trial_started", "points": 50, "half_life_days": 1},
        {"name": "seat", "event": "invite", "points": 20},  # never decays
        {"name": "unsub", "event": "unsubscribed", "points": -60, "half_life_days": 2},
    ],
    "fit": [{"name": "big", "attribute": "size", "min": 100, "points": 10}],
    "scale": {0: 0, 25: 1, 50: 2, 75: 3, 150: 4, 300: 5},
    "bands": [{"name": "cold", "min_score": 0}, {"name": "warm", "min_score": 2},
              {"name": "hot", "min_score": 3}],
    "thresholds": {"pql": 75},
})
TRIGGERS = TriggersConfig.model_validate({
    "bands": ["cold", "warm", "hot"],
    "triggers": [{"name": "became_warm", "kind": "band_entered", "band": "warm"},
                 {"name": "went_quiet", "kind": "score_dropped", "by": 1.0, "within_days": 14}],
})


@contextlib.contextmanager
def _database(kind: str, request, tmp_path, name: str = "serve") -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / f'{name}.db'}"
    else:
        with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
            yield url


@contextlib.contextmanager
def _writer(url: str, clock: dict, **kwargs) -> Iterator[Writer]:
    engine = db.make_engine(url)
    db.create_tables(engine)
    create_activation_tables(engine)
    writer = Writer(engine, RuleScorer(RULES), ServiceMetrics(), clock=lambda: clock["now"], **kwargs)
    writer.start()
    try:
        yield writer
    finally:
        writer.stop()
        engine.dispose()


STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)]


def _random_rows(rng: random.Random, n: int, contacts: int, at: datetime) -> list[EventRow | ContactUpdate]:
    rows: list[EventRow | ContactUpdate] = []
    for i in range(n):
        contact = f"c{rng.randrange(contacts)}"
        if rng.random() < 0.1:
            rows.append(ContactUpdate(contact, None, None, {"size": rng.choice([5, 150, 900])}))
            continue
        kind = rng.choice(["page_view", "trial_started", "invite", "unsubscribed", "other"])
        props = {"path": rng.choice(["/pricing", "/"])} if kind == "page_view" else None
        # some in the past, some a little in the future (pending until time reaches them)
        ts = at + timedelta(hours=rng.uniform(-24 * 20, 6))
        rows.append(EventRow(f"e{i}-{rng.random()}", contact, kind, ts, 1.0, None, None, props))
    return rows


@pytest.mark.parametrize("store", STORES)
def test_an_evicted_contact_is_read_back_from_the_store_and_scores_exactly_as_a_cached_one(store, request, tmp_path):
    rng = random.Random(7)
    clock = {"now": NOW}
    with (_database(store, request, tmp_path, "small") as small_url,
          _database(store, request, tmp_path, "large") as large_url,
          _writer(small_url, clock, cache_contacts=3) as small,
          _writer(large_url, clock, cache_contacts=1_000) as large):
        for step in range(40):
            clock["now"] = NOW + timedelta(hours=7 * step)
            rows = _random_rows(rng, rng.randrange(1, 6), 12, clock["now"])
            got = small.submit(rows).result(timeout=30)
            want = large.submit(rows).result(timeout=30)
            assert got.stored == want.stored
            assert got.scores.keys() == want.scores.keys()
            for contact, view in want.scores.items():
                # identical, not close: the store holds the exact state the cache held
                assert got.scores[contact] == view, (step, contact)
            assert small.cached_contacts <= 3
        clock["now"] += timedelta(days=3)
        for n in range(12):  # a read of an evicted contact too
            a, b = small.current(f"c{n}"), large.current(f"c{n}")
            assert (a is None) == (b is None)
            if a is not None:
                assert a[0] == b[0]
        assert small.evictions > 0 and large.evictions == 0
        assert small.metrics.cache_evictions._value.get() == small.evictions


def test_the_cache_is_bounded_and_its_size_and_evictions_are_on_metrics(tmp_path):
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'serve.db'}", rules=RULES,
                               write_keys=frozenset({WRITE_KEY}), config=ServeConfig(cache_contacts=3, metrics="open"))
    with running_server(settings, clock=lambda: NOW) as (base, _app):
        for n in range(5):
            body = {"type": "track", "userId": f"u{n}", "event": "invite", "timestamp": "2026-03-01T10:00:00Z"}
            assert httpx.post(f"{base}/v1/track", json=body, auth=(WRITE_KEY, "")).status_code == 200
        # an evicted contact still answers, from the store
        score = httpx.get(f"{base}/v1/contacts/u0/score", auth=(WRITE_KEY, "")).json()
        metrics = httpx.get(f"{base}/metrics").text
    assert score["points"] == 20
    assert "propensity_contact_cache_size 3.0" in metrics
    assert "propensity_contact_cache_capacity 3.0" in metrics
    assert "propensity_contact_cache_evictions_total 2.0" in metrics


def test_the_default_cache_bound_is_stated_in_the_config():
    assert ServeConfig().cache_contacts == 100_000
    with pytest.raises(ValueError):
        ServeConfig(cache_contacts=0)


# --------------------------------------------------------------------------- the sweep


def _event(event_id: str, contact: str, kind: str, ts: datetime) -> EventRow:
    return EventRow(event_id, contact, kind, ts, 1.0, None, None, None)


def _stored(engine: sa.Engine) -> dict[str, sa.Row]:
    with engine.connect() as conn:
        return {r.contact_id: r for r in conn.execute(sa.select(db.score_state))}


def _outbox(engine: sa.Engine) -> list[tuple[str, str, datetime]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(outbox.c.trigger, outbox.c.contact_id, outbox.c.created_at)
                                                 .order_by(outbox.c.id))]


@pytest.mark.parametrize("store", STORES)
def test_a_band_reached_by_decay_fires_once_by_the_first_sweep_after_it_and_contacts_not_due_are_untouched(
        store, request, tmp_path):
    clock = {"now": NOW}
    with (_database(store, request, tmp_path) as url,
          _writer(url, clock, triggers=TriggerEngine(TRIGGERS), sweep_chunk=2) as writer):
        engine = writer.engine
        rows = [
            # rising: 20 steady points plus -60 decaying (half-life 2 days) -> warm (50) by decay
            _event("r1", "rising", "invite", NOW - timedelta(hours=1)),
            _event("r2", "rising", "invite", NOW - timedelta(hours=1)),
            _event("r3", "rising", "invite", NOW - timedelta(hours=1)),
            _event("r4", "rising", "unsubscribed", NOW - timedelta(hours=1)),
            # falling: a trial (50, half-life 1 day) plus 40 steady: 3.0 -> drops by 1.0 by decay
            _event("f1", "falling", "trial_started", NOW - timedelta(hours=1)),
            _event("f2", "falling", "invite", NOW - timedelta(hours=1)),
            _event("f3", "falling", "invite", NOW - timedelta(hours=1)),
            # steady: nothing decays, nothing expires: never due
            _event("s1", "steady", "invite", NOW - timedelta(hours=1)),
        ]
        writer.submit(rows).result(timeout=30)
        start = _stored(engine)
        assert start["steady"].next_due is None
        assert start["rising"].band == "cold" and start["falling"].band == "hot"

        # an hour on: nobody has moved far enough to reach a level: no contact is looked at
        clock["now"] = NOW + timedelta(hours=1)
        assert writer.request_sweep().result(timeout=30) == 0
        assert writer.metrics.swept._value.get() == 0
        assert _stored(engine) == start

        # the exact instant "rising" reaches warm: 60 - 60 * 2**(-t / 2 days) = 50 points
        rising_at = NOW - timedelta(hours=1) + timedelta(days=2 * math.log2(60 / 10))
        sweeps = [NOW + timedelta(hours=6 * k) for k in range(1, 41)]  # ten days, every 6 hours
        looked = []
        scorer = RuleScorer(RULES)
        for at in sweeps:
            clock["now"] = at
            before = writer.metrics.swept._value.get()
            writer.request_sweep().result(timeout=30)
            looked.append(writer.metrics.swept._value.get() - before)
            stored = _stored(engine)
            for contact, row in stored.items():
                # the stored band is the band now, after every sweep, contact by contact
                state = writer.current(contact)[0]
                assert row.band == state.band, (at, contact)
            assert stored["steady"] == start["steady"]  # never due, never written
        fired = _outbox(engine)
    # the first: "falling" entered warm (and hot) with its first events, in the event commit
    assert [(t, c) for t, c, _ in fired] == [("became_warm", "falling"), ("went_quiet", "falling"),
                                             ("became_warm", "rising")]
    warm_at = next(at for t, c, at in fired if (t, c) == ("became_warm", "rising"))
    assert warm_at == min(s for s in sweeps if s >= rising_at)  # the first sweep after the crossing
    # far fewer looks than contacts x sweeps (3 decaying contacts, 40 sweeps)
    assert sum(looked) < 3 * len(sweeps) / 2
    assert scorer.points_for_score(2) == 50


@pytest.mark.parametrize("store", STORES)
def test_a_contact_committed_after_the_sweep_read_it_keeps_the_commit_and_the_others_are_swept(
        store, request, tmp_path):
    """The sweep reads and computes off the writer; what an event commit stored meanwhile wins."""
    clock = {"now": NOW}
    with (_database(store, request, tmp_path) as url, _writer(url, clock, cache_contacts=1) as writer):
        # two decaying contacts (a trial: 50 points, half-life 1 day), one of them evicted
        writer.submit([_event("a1", "a", "trial_started", NOW - timedelta(hours=1)),
                       _event("b1", "b", "trial_started", NOW - timedelta(hours=1))]).result(timeout=30)
        clock["now"] = NOW + timedelta(days=3)
        with writer.engine.begin() as conn:  # both due now
            conn.execute(sa.update(db.score_state).values(next_due=NOW))
        chunk = writer._sweeper._chunk(["a", "b"])  # read and brought to now: not stored yet
        assert chunk.changed == {"a", "b"}
        # meanwhile an event for "a" is committed (a later state, with its own next_due)
        committed = writer.submit([_event("a2", "a", "invite", NOW + timedelta(days=3, hours=-1))]).result(timeout=30)
        changed, _seconds = writer.store_swept(chunk).result(timeout=30)
        stored = _stored(writer.engine)
        a_now, b_now = writer.current("a")[0], writer.current("b")[0]
    assert changed == 1  # "b" only
    assert stored["a"].points == committed.scores["a"].points == a_now.points  # the invite kept
    assert stored["a"].points > 20  # the trial's decayed points and the invite's 20
    want_b = RuleScorer(RULES)
    state = want_b.new_state(NOW)
    want_b.apply(state, NOW - timedelta(hours=1), "trial_started", 1.0, None)
    want_b.advance(state, NOW + timedelta(days=3))
    assert stored["b"].points == pytest.approx(want_b.view("b", state).points) == b_now.points
    assert stored["b"].scored_at == NOW + timedelta(days=3) and stored["b"].next_due > NOW + timedelta(days=3)


def test_no_level_is_reached_before_next_due():
    """Random states: between now and ``next_due``, every level's side stays as it is now."""
    rng = random.Random(3)
    scorer = RuleScorer(RULES)
    levels = scorer.levels()
    checked = 0
    for _ in range(150):
        state = scorer.new_state(NOW - timedelta(days=30))
        for row in _random_rows(rng, rng.randrange(1, 8), 1, NOW - timedelta(days=5)):
            if isinstance(row, EventRow):
                scorer.apply(state, row.ts, row.event_type, row.value, row.props)
        scorer.advance(state, NOW)
        view = scorer.view("c", state)
        due, _ = scorer.next_due_us(state, view.points, levels)
        until = NOW + timedelta(days=60) if due is None else min(from_micros(due), NOW + timedelta(days=60))
        sides = [view.points >= level for level in levels]
        t = NOW + timedelta(hours=2)
        while t < until:
            assert [scorer.peek("c", state, t).points >= level for level in levels] == sides, (t, until)
            t += timedelta(hours=2)
            checked += 1
    assert checked > 1_000


@pytest.mark.parametrize("store", STORES)
def test_a_store_from_before_next_due_opens_and_every_scored_contact_is_due(store, request, tmp_path):
    old = sa.MetaData()
    columns = [sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
               for c in db.score_state.columns if c.name != "next_due"]
    old_state = sa.Table("score_state", old, *columns)
    with _database(store, request, tmp_path) as url:
        engine = db.make_engine(url)
        old.create_all(engine)
        with engine.begin() as conn:
            conn.execute(sa.insert(old_state), [
                {"contact_id": "a", "state": "{}", "scored_at": NOW, "points": 3.0, "rule_score": 0.1, "band": "cold"},
                {"contact_id": "b", "state": "{}", "scored_at": NOW, "points": 0.0, "rule_score": 0.0, "band": "cold"},
            ])
        db.create_tables(engine)
        db.create_tables(engine)  # twice: nothing to do the second time
        stored = _stored(engine)
        indexes = {i["name"] for i in sa.inspect(engine).get_indexes("score_state")}
        engine.dispose()
    assert stored["a"].next_due == NOW and stored["b"].next_due is None
    assert stored["a"].points == 3.0
    assert "ix_score_state_next_due" in indexes
