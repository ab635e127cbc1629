"""The outbox against a real local HTTP receiver: signatures, retries, dead letters, replay."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import random
import threading
import time

import pytest
import sqlalchemy as sa

from propensity.pipelines.activation.outbox import (
    RetryPolicy,
    WebhookSender,
    backoff_seconds,
    deliver_due,
    enqueue,
    list_messages,
    replay,
    sign,
    verify_signature,
)
from propensity.pipelines.activation.tables import dead_letters, outbox
from propensity.pipelines.activation.triggers import ScoreChange, TriggerEngine, TriggersConfig

SECRET = "whsec-test-3f9a1c"
NOW = dt.datetime(2026, 3, 1, 12, 0)


def queue(engine, n=1, prefix="k"):
    with engine.begin() as conn:
        return [enqueue(conn, idempotency_key=f"{prefix}{i}", kind="trigger", payload={"n": i, "key": f"{prefix}{i}"},
                        trigger="t", contact_id=f"c{i}", now=NOW) for i in range(n)]


def row(engine, table, **where):
    with engine.connect() as conn:
        query = sa.select(table)
        for name, value in where.items():
            query = query.where(table.c[name] == value)
        return conn.execute(query).first()


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    body = b'{"a":1}'
    expected = hmac.new(SECRET.encode(), b'1767225600.{"a":1}', hashlib.sha256).hexdigest()
    assert sign(SECRET, body, 1767225600) == f"t=1767225600,v1={expected}"


def test_a_signature_verifies_and_rejects_tampering_wrong_secrets_and_stale_timestamps():
    body = b'{"a":1}'
    now = int(time.time())
    header = sign(SECRET, body, now)
    assert verify_signature(SECRET, header, body)
    assert not verify_signature(SECRET, header, b'{"a":2}')
    assert not verify_signature("other", header, body)
    assert not verify_signature(SECRET, sign(SECRET, body, now - 3600), body)
    assert not verify_signature(SECRET, None, body)
    assert not verify_signature(SECRET, "garbage", body)


def test_backoff_grows_exponentially_is_capped_and_jittered():
    policy = RetryPolicy(initial_seconds=2, max_seconds=60, multiplier=2)
    rng = random.Random(1)
    for attempts, full in [(1, 2), (2, 4), (3, 8), (4, 16), (10, 60)]:
        waits = [backoff_seconds(attempts, policy, rng) for _ in range(200)]
        assert full / 2 <= min(waits) and max(waits) <= full
        assert max(waits) - min(waits) > full / 4  # jitter actually spreads them


def test_delivery_posts_the_signed_payload_once_and_marks_it_delivered(engine, receiver):
    (message_id,) = queue(engine)
    with WebhookSender(receiver.url + "/hook", SECRET) as sender:
        report = deliver_due(engine, sender, now=NOW)
        assert (report.attempted, report.delivered) == (1, 1)
        assert deliver_due(engine, sender, now=NOW + dt.timedelta(hours=1)).attempted == 0
    (request,) = receiver.received
    assert request.method == "POST" and request.path == "/hook"
    assert verify_signature(SECRET, request.headers["x-propensity-signature"], request.body)
    assert request.headers["x-propensity-idempotency-key"] == "k0"
    assert request.json() == {"n": 0, "key": "k0"}
    delivered = row(engine, outbox, id=message_id)
    assert delivered.delivered_at is not None and delivered.attempts == 1


def test_failures_are_retried_on_a_backoff_schedule_until_they_succeed(engine, receiver):
    receiver.replies = [(500, {}, b"boom"), (503, {}, b"busy")]
    (message_id,) = queue(engine)
    policy = RetryPolicy(max_attempts=5, initial_seconds=10, max_seconds=600)
    with WebhookSender(receiver.url, SECRET) as sender:
        assert deliver_due(engine, sender, now=NOW, policy=policy).retrying == 1
        first = row(engine, outbox, id=message_id)
        assert first.attempts == 1 and "HTTP 500" in first.last_error
        assert NOW + dt.timedelta(seconds=5) <= first.next_attempt_at <= NOW + dt.timedelta(seconds=10)
        # not due yet: nothing is sent
        assert deliver_due(engine, sender, now=NOW + dt.timedelta(seconds=4), policy=policy).attempted == 0
        assert deliver_due(engine, sender, now=first.next_attempt_at, policy=policy).retrying == 1
        second = row(engine, outbox, id=message_id)
        assert second.next_attempt_at - first.next_attempt_at >= dt.timedelta(seconds=10)  # 20 s * (1/2 .. 1)
        assert deliver_due(engine, sender, now=second.next_attempt_at, policy=policy).delivered == 1
    assert len(receiver.received) == 3
    assert row(engine, outbox, id=message_id).attempts == 3


def test_after_max_attempts_a_message_is_dead_lettered_and_replay_delivers_it(engine, receiver):
    receiver.default = (500, {}, b"down")
    ids = queue(engine, 2)
    policy = RetryPolicy(max_attempts=3, initial_seconds=1, max_seconds=1)
    with WebhookSender(receiver.url, SECRET) as sender:
        for minute in range(3):
            deliver_due(engine, sender, now=NOW + dt.timedelta(minutes=minute), policy=policy)
        assert list_messages(engine) == []
        dead = list_messages(engine, dead=True)
        assert sorted(d["outbox_id"] for d in dead) == ids
        assert all(d["attempts"] == 3 and "HTTP 500" in d["last_error"] for d in dead)
        assert len(receiver.received) == 6
        receiver.default = (204, {}, b"")
        assert replay(engine, all_dead=True, now=NOW + dt.timedelta(hours=1)) == 2
        report = deliver_due(engine, sender, now=NOW + dt.timedelta(hours=1), policy=policy)
    assert report.delivered == 2
    assert list_messages(engine, dead=True) == []
    keys = [r.headers["x-propensity-idempotency-key"] for r in receiver.received[-2:]]
    assert sorted(keys) == ["k0", "k1"]


def test_a_refusal_is_dead_lettered_at_once_and_a_429_waits_its_retry_after(engine, receiver):
    queue(engine, 1, prefix="refused")
    queue(engine, 1, prefix="throttled")
    receiver.rule = lambda request, i: ((400, {}, b"bad payload") if b"refused" in request.body
                                        else (429, {"Retry-After": "120"}, b"slow down"))
    with WebhookSender(receiver.url, SECRET) as sender:
        report = deliver_due(engine, sender, now=NOW, policy=RetryPolicy(initial_seconds=1))
    assert (report.dead, report.retrying) == (1, 1)
    assert row(engine, dead_letters, idempotency_key="refused0").attempts == 1
    throttled = row(engine, outbox, idempotency_key="throttled0")
    assert throttled.next_attempt_at >= NOW + dt.timedelta(seconds=120)


def test_replaying_a_delivered_message_sends_it_again_under_the_same_key(engine, receiver):
    (message_id,) = queue(engine)
    with WebhookSender(receiver.url, SECRET) as sender:
        deliver_due(engine, sender, now=NOW)
        assert replay(engine, [message_id], now=NOW) == 1
        assert deliver_due(engine, sender, now=NOW).delivered == 1
    assert [r.headers["x-propensity-idempotency-key"] for r in receiver.received] == ["k0", "k0"]
    with pytest.raises(ValueError, match="not in the outbox"):
        replay(engine, [message_id, 999])


def test_a_row_claimed_by_another_deliverer_is_skipped(engine, receiver):
    (message_id,) = queue(engine)
    # another deliverer claimed it a moment ago: its lease moved next_attempt_at ahead
    with engine.begin() as conn:
        conn.execute(sa.update(outbox).where(outbox.c.id == message_id)
                     .values(next_attempt_at=NOW + dt.timedelta(minutes=5)))
    with WebhookSender(receiver.url, SECRET) as sender:
        assert deliver_due(engine, sender, now=NOW).attempted == 0
        # ...and it died: once the lease is over, the row is delivered
        assert deliver_due(engine, sender, now=NOW + dt.timedelta(minutes=6)).delivered == 1
    assert len(receiver.received) == 1


def test_a_trigger_firing_reaches_the_receiver_signed_with_its_why_now(engine, receiver):
    cfg = TriggersConfig.model_validate({"bands": ["cold", "warm", "hot"], "triggers": [
        {"name": "became_hot", "kind": "band_entered", "band": "hot"}]})
    with engine.begin() as conn:
        TriggerEngine(cfg).evaluate(conn, ScoreChange("lead-7", NOW, 3.0, 3.9, "warm", "hot", 80.0, 160.0,
                                                      [{"event_id": "e1", "event_type": "demo_requested"}]))
    sender = WebhookSender.from_env(environ={"PROPENSITY_WEBHOOK_URL": receiver.url,
                                             "PROPENSITY_WEBHOOK_SECRET": SECRET})
    with sender:
        assert deliver_due(engine, sender, now=NOW).delivered == 1
    (request,) = receiver.received
    assert verify_signature(SECRET, request.headers["x-propensity-signature"], request.body)
    body = request.json()
    assert body["trigger"] == "became_hot" and body["contact_id"] == "lead-7"
    assert body["why_now"]["band_before"] == "warm" and body["why_now"]["band_after"] == "hot"
    assert body["why_now"]["events"] == [{"event_id": "e1", "event_type": "demo_requested"}]
    assert json.loads(request.body) == json.loads(row(engine, outbox, contact_id="lead-7").payload)


def test_a_sender_needs_its_url_and_secret_from_the_environment_and_never_shows_the_secret():
    with pytest.raises(ValueError, match="PROPENSITY_WEBHOOK_SECRET"):
        WebhookSender.from_env(environ={"PROPENSITY_WEBHOOK_URL": "http://x"})
    sender = WebhookSender("http://127.0.0.1:9/x", SECRET)
    assert SECRET not in repr(sender)
    sender.close()


def test_two_deliverers_at_once_send_every_message_exactly_once(engine, receiver):
    queue(engine, 40)
    reports = []

    def deliver():
        with WebhookSender(receiver.url, SECRET) as sender:
            reports.append(deliver_due(engine, sender, now=NOW, limit=40, record_every=5))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    keys = sorted(r.headers["x-propensity-idempotency-key"] for r in receiver.received)
    assert keys == sorted(f"k{i}" for i in range(40))
    assert sum(r.delivered for r in reports) == 40
    assert all(m["delivered_at"] is not None for m in list_messages(engine, limit=100))
