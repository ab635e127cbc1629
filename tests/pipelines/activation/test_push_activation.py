"""``push`` against real local HTTP receivers: traits, changed-only, batching, retries, resume, secrets."""

from __future__ import annotations

import base64
import logging
import time

import pandas as pd
import pytest
import sqlalchemy as sa

from propensity.pipelines.activation.outbox import verify_signature
from propensity.pipelines.activation.push import (
    PushError,
    PushOptions,
    TokenBucket,
    destination_from_env,
    push,
    read_scores,
    traits_from_scores,
)
from propensity.pipelines.activation.tables import push_state

WRITE_KEY = "wk_live_5ecret_9d2b"
API_KEY = "cio_api_k3y_71ab"
SITE_ID = "site-4411"
FAST = PushOptions(batch_size=3, rate=1000, max_attempts=3, initial_backoff_seconds=0.01, max_backoff_seconds=0.05)


def rule_scores(n=7, shift=0.0, as_of="2026-03-01") -> pd.DataFrame:
    return pd.DataFrame({
        "contact_id": [f"c{i}" for i in range(n)],
        "as_of": pd.Timestamp(as_of),
        "points": [10.0 * i for i in range(n)],
        "rule_score": [round(0.5 * i + shift, 3) for i in range(n)],
        "band": ["cold" if i < 4 else "warm" for i in range(n)],
        "points__demo_request": [0.0 if i % 2 else 150.0 for i in range(n)],
        "points__pricing_page": [float(i) for i in range(n)],
        "points__unsubscribed": [-20.0 if i == 2 else 0.0 for i in range(n)],
        "points__email_open": [1.0] * n,
    })


def segment_env(receiver) -> dict[str, str]:
    return {"SEGMENT_WRITE_KEY": WRITE_KEY, "SEGMENT_URL": receiver.url}


def identified(receiver) -> list[str]:
    return [call["userId"] for r in receiver.received for call in r.json()["batch"]]


def stored(engine, destination) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(push_state.c.contact_id, push_state.c.traits)
                                 .where(push_state.c.destination == destination)).all())


def test_traits_carry_score_band_and_the_biggest_positive_rules_as_top_reasons():
    contacts = {c.contact_id: c.traits for c in traits_from_scores(rule_scores())}
    assert contacts["c2"] == {"intent_score": 1.0, "intent_band": "cold",
                              "top_reasons": ["demo_request", "pricing_page", "email_open"]}
    assert contacts["c5"]["top_reasons"] == ["pricing_page", "email_open"]  # no demo, nothing negative
    assert "propensity" not in contacts["c5"]


def test_learned_scores_carry_propensity_and_the_latest_as_of_wins():
    frame = pd.DataFrame({"contact_id": ["a", "a", "b"],
                          "as_of": pd.to_datetime(["2026-02-01", "2026-03-01", "2026-03-01"]),
                          "probability": [0.1, 0.31234, 0.05], "learned_score": [1.0, 2.5, 0.4],
                          "band": ["cold", "warm", "cold"], "reason_1": ["asked for a demo", "visited pricing 3x", "x"],
                          "reason_2": ["y", None, "z"]})
    traits = {c.contact_id: c.traits for c in traits_from_scores(frame)}
    assert traits["a"] == {"intent_score": 2.5, "intent_band": "warm", "propensity": 0.3123,
                           "top_reasons": ["visited pricing 3x"]}


def test_scores_without_the_needed_columns_or_values_are_errors_naming_file_and_row(tmp_path):
    with pytest.raises(ValueError, match=r"s\.csv: no learned_score or rule_score"):
        traits_from_scores(pd.DataFrame({"contact_id": ["a"], "score": [1.0]}), source="s.csv")
    with pytest.raises(ValueError, match=r"s\.csv: row 2: rule_score is empty"):
        traits_from_scores(pd.DataFrame({"contact_id": ["a", "b"], "rule_score": [1.0, None]}), source="s.csv")
    with pytest.raises(ValueError, match=r"contact 'a' has several rows"):
        traits_from_scores(pd.DataFrame({"contact_id": ["a", "a"], "rule_score": [1.0, 2.0]}))
    path = tmp_path / "scores.csv"
    rule_scores().to_csv(path, index=False)
    assert [c.contact_id for c in traits_from_scores(read_scores(path))] == [f"c{i}" for i in range(7)]
    with pytest.raises(ValueError, match=r"scores\.txt.*parquet"):
        read_scores(path.rename(tmp_path / "scores.txt"))


def test_segment_push_sends_identify_batches_with_basic_auth_and_then_only_what_changed(sqlite_db, receiver):
    destination = destination_from_env("segment", segment_env(receiver))
    report = push(sqlite_db, destination, traits_from_scores(rule_scores()), options=FAST)
    assert (report.sent, report.batches, report.requests, report.unchanged) == (7, 3, 3, 0)
    first = receiver.received[0]
    assert first.path == "/v1/batch"
    assert first.headers["authorization"] == "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    call = first.json()["batch"][0]
    assert call["type"] == "identify" and call["userId"] == "c0"
    assert call["traits"]["intent_score"] == 0.0 and call["traits"]["intent_band"] == "cold"
    assert len({c["messageId"] for r in receiver.received for c in r.json()["batch"]}) == 7
    assert sorted(identified(receiver)) == sorted(stored(sqlite_db, "segment"))

    # nothing changed: nothing is sent
    again = push(sqlite_db, destination, traits_from_scores(rule_scores()), options=FAST)
    assert (again.sent, again.unchanged, len(receiver.received)) == (0, 7, 3)
    # two contacts' scores change: only they are sent
    changed = rule_scores()
    changed.loc[changed.contact_id.isin(["c1", "c6"]), "rule_score"] += 0.4
    third = push(sqlite_db, destination, traits_from_scores(changed), options=FAST)
    assert third.sent == 2 and sorted(identified(receiver)[7:]) == ["c1", "c6"]


def test_customerio_track_api_gets_one_put_per_contact_with_site_id_and_key(sqlite_db, receiver):
    env = {"CUSTOMERIO_SITE_ID": SITE_ID, "CUSTOMERIO_API_KEY": API_KEY, "CUSTOMERIO_TRACK_URL": receiver.url}
    contacts = traits_from_scores(rule_scores(3).assign(contact_id=["a@x.io", "b/2", "c 3"]))
    report = push(sqlite_db, destination_from_env("customerio", env), contacts, options=FAST)
    assert report.sent == 3 and report.requests == 3
    assert [r.method for r in receiver.received] == ["PUT"] * 3
    assert [r.path for r in receiver.received] == ["/api/v1/customers/a%40x.io", "/api/v1/customers/b%2F2",
                                                   "/api/v1/customers/c%203"]
    expected = "Basic " + base64.b64encode(f"{SITE_ID}:{API_KEY}".encode()).decode()
    assert all(r.headers["authorization"] == expected for r in receiver.received)
    assert receiver.received[0].json()["intent_score"] == 0.0


def test_customerio_data_pipelines_key_uses_the_segment_compatible_batch(sqlite_db, receiver):
    env = {"CUSTOMERIO_CDP_API_KEY": "cdp-key", "CUSTOMERIO_CDP_URL": receiver.url, "CUSTOMERIO_API_KEY": API_KEY}
    push(sqlite_db, destination_from_env("customerio", env), traits_from_scores(rule_scores(2)), options=FAST)
    assert receiver.received[0].path == "/v1/batch"
    assert stored(sqlite_db, "customerio").keys() == {"c0", "c1"}


def test_webhook_push_is_signed(sqlite_db, receiver):
    env = {"PROPENSITY_PUSH_WEBHOOK_URL": receiver.url + "/scores", "PROPENSITY_WEBHOOK_SECRET": "s3cr3t-hook"}
    push(sqlite_db, destination_from_env("webhook", env), traits_from_scores(rule_scores(4)), options=FAST)
    assert len(receiver.received) == 2
    for request in receiver.received:
        assert verify_signature("s3cr3t-hook", request.headers["x-propensity-signature"], request.body)
        assert request.json()["type"] == "propensity.scores"
    assert [c["contact_id"] for c in receiver.received[1].json()["contacts"]] == ["c3"]


def test_a_failed_run_resumes_where_it_stopped(engine, receiver):
    # the third request (batch 3) fails however often it is retried
    receiver.rule = lambda request, i: (500, {}, b"oops") if b'"c6"' in request.body else (200, {}, b"{}")
    destination = destination_from_env("segment", segment_env(receiver))
    with pytest.raises(PushError, match=r"batch 3/3 failed: HTTP 500.*6 contacts were acknowledged.*other 1"):
        push(engine, destination, traits_from_scores(rule_scores()), options=FAST)
    assert len(receiver.received) == 2 + FAST.max_attempts
    assert set(stored(engine, "segment")) == {f"c{i}" for i in range(6)}
    receiver.rule = None
    report = push(engine, destination, traits_from_scores(rule_scores()), options=FAST)
    assert (report.sent, report.unchanged) == (1, 6)
    assert identified(receiver)[-1] == "c6"


def test_transient_errors_are_retried_and_a_429_retry_after_is_honoured(sqlite_db, receiver):
    receiver.replies = [(503, {}, b"busy"), (429, {"Retry-After": "1"}, b"slow down")]
    started = time.monotonic()
    report = push(sqlite_db, destination_from_env("segment", segment_env(receiver)),
                  traits_from_scores(rule_scores(2)), options=FAST)
    assert time.monotonic() - started >= 1.0
    assert report.sent == 2 and report.requests == 3 and len(receiver.received) == 3


def test_credentials_never_appear_in_errors_or_logs(sqlite_db, receiver, caplog):
    # a receiver that echoes the credentials it got, in a failure
    def echo(request, i):
        auth = request.headers.get("authorization", "")
        decoded = base64.b64decode(auth.removeprefix("Basic ")).decode()
        return 401, {}, f"bad credentials {auth} {decoded}".encode()

    receiver.rule = echo
    caplog.set_level(logging.DEBUG)
    env = {"CUSTOMERIO_SITE_ID": SITE_ID, "CUSTOMERIO_API_KEY": API_KEY, "CUSTOMERIO_TRACK_URL": receiver.url}
    with pytest.raises(PushError) as failure:
        push(sqlite_db, destination_from_env("customerio", env), traits_from_scores(rule_scores(2)), options=FAST)
    message = str(failure.value)
    assert "HTTP 401" in message and "***" in message
    assert len(receiver.received) == 1  # a refusal is not retried
    for secret in (API_KEY, base64.b64encode(f"{SITE_ID}:{API_KEY}".encode()).decode()):
        assert secret not in message
        assert secret not in caplog.text


def test_dry_run_sends_and_records_nothing(sqlite_db, receiver):
    report = push(sqlite_db, destination_from_env("segment", segment_env(receiver)),
                  traits_from_scores(rule_scores()), options=FAST, dry_run=True)
    assert report.dry_run and report.batches == 3 and report.sent == 0
    assert [c["userId"] for c in report.preview["json"]["batch"]] == ["c0", "c1", "c2"]
    assert receiver.received == [] and stored(sqlite_db, "segment") == {}


def test_missing_credentials_name_the_variables():
    with pytest.raises(ValueError, match="CUSTOMERIO_SITE_ID, CUSTOMERIO_API_KEY"):
        destination_from_env("customerio", {})
    with pytest.raises(ValueError, match="SEGMENT_WRITE_KEY"):
        destination_from_env("segment", {"SEGMENT_URL": "http://x"})
    with pytest.raises(ValueError, match="expected one of customerio, segment, webhook"):
        destination_from_env("hubspot", {})


def test_token_bucket_spaces_requests_at_the_rate_after_the_burst():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(rate=10, burst=2, clock=lambda: now[0], sleep=sleep)
    for _ in range(6):
        bucket.acquire()
    assert slept == pytest.approx([0.1, 0.1, 0.1, 0.1])  # 2 free, then one every 1/rate s
    now[0] += 10  # idle: the bucket refills to its burst, no more
    slept.clear()
    for _ in range(3):
        bucket.acquire()
    assert slept == pytest.approx([0.1])


def test_a_real_push_keeps_to_the_rate(sqlite_db, receiver):
    options = PushOptions(batch_size=1, rate=20, burst=1, max_attempts=1)
    started = time.monotonic()
    report = push(sqlite_db, destination_from_env("segment", segment_env(receiver)), traits_from_scores(rule_scores(6)),
                  options=options)
    assert report.requests == 6 and len(receiver.received) == 6
    assert time.monotonic() - started >= 5 / 20 - 0.01  # the first is free, then one per 50 ms


def test_a_webhook_url_token_is_not_shown_in_errors(sqlite_db, receiver):
    receiver.rule = lambda request, i: (403, {}, f"unknown hook {request.path}".encode())
    env = {"PROPENSITY_PUSH_WEBHOOK_URL": receiver.url + "/hooks/tok-98765", "PROPENSITY_WEBHOOK_SECRET": "sig-key-1"}
    with pytest.raises(PushError, match="HTTP 403") as failure:
        push(sqlite_db, destination_from_env("webhook", env), traits_from_scores(rule_scores(1)), options=FAST)
    assert "tok-98765" not in str(failure.value) and receiver.received[0].path == "/hooks/tok-98765"
