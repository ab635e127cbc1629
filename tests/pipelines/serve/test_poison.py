"""No request can poison the service: bad input is refused at the edge with its own 4xx, its
neighbours in the same group commit are stored, and no value makes a score non-finite.

One server per store (SQLite, PostgreSQL), with triggers on so that the activation tables (whose
``contact_id`` is VARCHAR(256)) are written in every commit, and a group-commit delay so that a
bad request and a good one sent together share one commit.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from propensity.features.sources import read_segment
from propensity.features.validate import validate
from propensity.pipelines.activation.tables import create_activation_tables
from propensity.pipelines.activation.triggers import TriggerEngine, TriggersConfig
from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.serve import db
from propensity.pipelines.serve.app import ServiceSettings
from propensity.pipelines.serve.config import ServeConfig
from propensity.pipelines.serve.ingest import ContactUpdate, EventRow
from propensity.pipelines.serve.metrics import ServiceMetrics
from propensity.pipelines.serve.state import RuleScorer
from propensity.pipelines.serve.worker import Writer, is_permanent
from tests.pipelines.serve.support import (
    WRITE_KEY,
    fresh_postgres_database,
    running_server,
)

NOW = datetime(2026, 3, 1, 12, 0, 0)
AUTH = (WRITE_KEY, "")
RULES = RuleSet.model_validate({
    "name": "poison",
    "activities": [
        {"name": "demo", "event": "demo_requested", "points": 40, "half_life_days": 30},
        # uncapped and per value: 1e308 twice was infinite points
        {"name": "spend", "event": "purchase", "points": 1, "per_value": True},
    ],
    "scale": {0: 0, 100: 5},
    "bands": [{"name": "cold", "min_score": 0}, {"name": "warm", "min_score": 2}, {"name": "hot", "min_score": 3.5}],
})
TRIGGERS = TriggersConfig.model_validate({
    "bands": ["cold", "warm", "hot"],
    # a drop trigger keeps every score change in activation_score_history (contact_id VARCHAR(256))
    "triggers": [{"name": "became_hot", "kind": "band_entered", "band": "hot"},
                 {"name": "went_quiet", "kind": "score_dropped", "by": 1.5, "within_days": 14}],
})
TS = "2026-02-01T10:00:00Z"


def _track(**fields) -> dict:
    return {"type": "track", "userId": "u1", "event": "demo_requested", "timestamp": TS, **fields}


def _deep(levels: int) -> bytes:
    return json.dumps(_track(properties={"k": "x"})).replace('"x"', "[" * levels + "1" + "]" * levels).encode()


LONG = "x" * 300
# (case, endpoint, body: dict or raw bytes, auth, status, words the message has)
BAD_INPUT = [
    ("userId over 256 characters", "track", _track(userId=LONG), AUTH, 400,
     "track, field 'userId': is 300 characters long, more than 256"),
    ("anonymousId over 256 characters", "track", {**_track(anonymousId=LONG), "userId": None}, AUTH, 400,
     "field 'anonymousId': is 300 characters long"),
    ("messageId over 256 characters", "track", _track(messageId=LONG), AUTH, 400, "field 'messageId': is 300"),
    ("long id inside a batch", "batch", {"batch": [_track(messageId="ok"), _track(userId=LONG)]}, AUTH, 400,
     "batch[1], field 'userId': is 300"),
    ("company_id over 256 characters", "identify",
     {"userId": "u1", "traits": {"company_id": LONG}}, AUTH, 400, "field 'traits.company_id': is 300"),
    ("userId an object", "track", _track(userId={"id": 1}), AUTH, 400,
     "field 'userId': expected a string or a number, got an object"),
    ("userId a list", "track", _track(userId=["u1"]), AUTH, 400, "field 'userId': expected a string or a number, got a list"),
    ("userId a boolean", "track", _track(userId=True), AUTH, 400, "field 'userId': expected a string or a number, got a boolean"),
    ("userId with a NUL", "track", _track(userId="u\x001"), AUTH, 400, "field 'userId': contains a NUL character"),
    ("messageId an object", "track", _track(messageId={"a": 1}), AUTH, 400, "field 'messageId': expected a string"),
    ("groupId a list", "track", _track(context={"groupId": ["g"]}), AUTH, 400, "field 'context.groupId': expected"),
    ("event with a NUL", "track", _track(event="demo\x00"), AUTH, 400, "field 'event': contains a NUL character"),
    ("timestamp true", "track", _track(timestamp=True), AUTH, 400, "field 'timestamp': cannot parse 'True'"),
    ("NaN in properties", "track",
     json.dumps(_track(properties={"v": 1})).replace('"v": 1', '"v": NaN').encode(), AUTH, 400,
     "body: not valid JSON (NaN is not valid JSON"),
    ("Infinity as a value", "track",
     json.dumps(_track(properties={"value": 1})).replace('"value": 1', '"value": -Infinity').encode(), AUTH, 400,
     "-Infinity is not valid JSON"),
    ("nested 40 levels", "track", _deep(40), AUTH, 400, "body: JSON nested deeper than 32 levels"),
    ("nested 100,000 levels", "track", _deep(100_000), AUTH, 400, "body: not valid JSON (nested too deeply"),
    ("nested 100,000 levels without a key", "track", _deep(100_000), None, 401, "missing or unknown write key"),
    ("unparseable without a key", "track", b"{not json", None, 401, "missing or unknown write key"),
    ("deep body with a wrong key", "track", _deep(100_000), ("stolen", ""), 401, "unknown write key"),
    ("writeKey a list in the body", "track", {**_track(), "writeKey": [WRITE_KEY]}, None, 401,
     "missing or unknown write key"),
    ("writeKey an object in the body", "track", {**_track(), "writeKey": {"k": WRITE_KEY}}, None, 401,
     "missing or unknown write key"),
]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def service(request, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(base URL, database URL) of one running service per store, shared by this module's tests."""
    if request.param == "sqlite":
        url_cm = contextlib.nullcontext(f"sqlite:///{tmp_path_factory.mktemp('poison') / 'serve.db'}")
    else:
        url_cm = fresh_postgres_database(request.getfixturevalue("postgres_url"))
    with url_cm as url:
        settings = ServiceSettings(database_url=url, rules=RULES, write_keys=frozenset({WRITE_KEY}),
                                   triggers=TRIGGERS, config=ServeConfig(commit_delay_ms=80))
        with running_server(settings, clock=lambda: NOW) as (base, _):
            yield base, url


def _post(base: str, kind: str, body, auth) -> httpx.Response:
    if isinstance(body, bytes):
        return httpx.post(f"{base}/v1/{kind}", content=body, auth=auth, timeout=30,
                          headers={"Content-Type": "application/json"})
    return httpx.post(f"{base}/v1/{kind}", json=body, auth=auth, timeout=30)


def _stored_ids(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(sa.text("SELECT event_id FROM events")).scalars())
    finally:
        engine.dispose()


@pytest.mark.parametrize(("case", "kind", "body", "auth", "status", "message"), BAD_INPUT,
                         ids=[c[0] for c in BAD_INPUT])
def test_bad_input_gets_its_own_4xx_and_the_request_beside_it_is_stored(service, case, kind, body, auth, status,
                                                                        message):
    base, url = service
    good_id = f"good-{case}"
    good = _track(userId=f"g-{len(case)}", messageId=good_id)
    with ThreadPoolExecutor(2) as pool:  # sent together: one group commit (commit_delay_ms=80)
        bad_future = pool.submit(_post, base, kind, body, auth)
        good_future = pool.submit(_post, base, "track", good, AUTH)
        bad, neighbour = bad_future.result(), good_future.result()
    assert bad.status_code == status, bad.text
    assert message in bad.json()["message"], bad.json()
    assert bad.json()["success"] is False
    assert neighbour.status_code == 200, neighbour.text
    assert good_id in _stored_ids(url)
    # a retry is refused the same way: a permanent error never turns into "try again" (503)
    assert _post(base, kind, body, auth).status_code == status


def test_a_huge_per_value_event_twice_keeps_points_and_the_trigger_payload_finite(service):
    base, url = service
    purchase = {"type": "track", "userId": "whale", "event": "purchase", "timestamp": TS,
                "properties": {"value": 1e308}}
    for i in range(2):
        response = _post(base, "track", {**purchase, "messageId": f"whale-{i}"}, AUTH)
        assert response.status_code == 200, response.text
        assert math.isfinite(response.json()["scores"]["whale"]["points"])
    score = httpx.get(f"{base}/v1/contacts/whale/score", auth=AUTH)
    assert score.status_code == 200, score.text
    body = score.json()
    assert body["rule_score"] == 5 and body["band"] == "hot"
    assert math.isfinite(body["points"]) and body["points"] == 1e12
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        payloads = conn.execute(sa.text("SELECT payload FROM activation_outbox WHERE contact_id = 'whale'")).scalars()
        why = [json.loads(p)["why_now"] for p in payloads]
    engine.dispose()
    assert [w["score_after"] for w in why] == [5]


def test_the_same_message_id_twice_in_one_batch_is_stored_once_and_answered_so(service):
    base, url = service
    call = _track(userId="twice", messageId="twice-1")
    response = _post(base, "batch", {"batch": [call, call]}, AUTH)
    assert response.status_code == 200, response.text
    assert (response.json()["stored"], response.json()["duplicates"]) == (1, 1)
    assert httpx.get(f"{base}/v1/contacts/twice/score", auth=AUTH).json()["events"] == 1


def test_identical_calls_without_message_id_are_distinct_in_one_batch_and_a_retry_adds_nothing(service, tmp_path):
    base, url = service
    call = {"type": "track", "userId": "same-twice", "event": "purchase", "timestamp": TS,
            "properties": {"value": 5, "item": "seat"}}
    other = {**call, "event": "demo_requested"}
    batch = {"batch": [call, other, call, call]}
    first = _post(base, "batch", batch, AUTH)
    assert first.status_code == 200, first.text
    assert (first.json()["stored"], first.json()["duplicates"]) == (4, 0)
    retry = _post(base, "batch", batch, AUTH)  # the client did not see the answer and resends
    assert (retry.json()["stored"], retry.json()["duplicates"]) == (0, 4)
    alone = _post(base, "track", call, AUTH)  # without a messageId, one more call is a retry of the first
    assert (alone.json()["stored"], alone.json()["duplicates"]) == (0, 1)
    assert httpx.get(f"{base}/v1/contacts/same-twice/score", auth=AUTH).json()["events"] == 4
    # the ids batch ingest gives the same calls read from one export file
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(json.dumps(c) for c in batch["batch"]) + "\n")
    expected = set(validate(read_segment(path)["events"], "events", path.name, now=NOW).good["event_id"])
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            stored = set(conn.execute(sa.text("SELECT event_id FROM events WHERE contact_id = 'same-twice'")).scalars())
    finally:
        engine.dispose()
    assert stored == expected and len(stored) == 4


# ------------------------------------------------------------------ the writer's group commit


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def writer(request, tmp_path) -> Iterator[Writer]:
    if request.param == "sqlite":
        url_cm = contextlib.nullcontext(f"sqlite:///{tmp_path / 'serve.db'}")
    else:
        url_cm = fresh_postgres_database(request.getfixturevalue("postgres_url"))
    with url_cm as url:
        engine = db.make_engine(url)
        db.create_tables(engine)
        create_activation_tables(engine)
        # a long delay: every job submitted below lands in the same group commit
        w = Writer(engine, RuleScorer(RULES), ServiceMetrics(), triggers=TriggerEngine(TRIGGERS),
                   commit_delay=0.5, clock=lambda: NOW)
        w.start()
        try:
            yield w
        finally:
            w.stop()
            engine.dispose()


def _event(event_id: str, contact: str) -> EventRow:
    return EventRow(event_id, contact, "demo_requested", NOW - timedelta(days=1), 1.0, None, None, None)


def test_a_group_commit_that_fails_on_one_request_stores_the_others_and_refuses_that_one(writer):
    # rows that passed no edge check: a trait no JSON can hold (fails on both stores), and on
    # PostgreSQL a contact id over the activation tables' VARCHAR(256)
    bad_jobs = [[ContactUpdate("u-bad", None, None, {"blob": b"bytes"})]]
    if writer.engine.dialect.name == "postgresql":
        bad_jobs.append([_event("e-long", "y" * 300)])
    good_jobs = [[_event(f"e{i}", f"u{i}")] for i in range(3)]
    futures = [writer.submit(good_jobs[0]), *(writer.submit(j) for j in bad_jobs),
               writer.submit(good_jobs[1]), writer.submit(good_jobs[2])]
    good = [futures[0], *futures[-2:]]
    bad = futures[1:-2]
    for future in good:
        assert future.result(timeout=30).stored == 1
    for future in bad:
        error = future.exception(timeout=30)
        assert error is not None and is_permanent(error), error
    assert _stored_ids(writer.engine.url.render_as_string(hide_password=False)) == {"e0", "e1", "e2"}
