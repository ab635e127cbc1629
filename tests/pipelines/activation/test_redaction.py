"""Secrets never reach an error text, whole or in part (issue 15, item 6).

A real local receiver answers with an error body that echoes a secret placed so that it crosses
the 300-character cut: redacting after the cut left its prefix. And ``user:password@`` in a
webhook or push URL is masked in every form a receiver could echo it (as given, percent-decoded,
``user:password``, and the base64 ``Authorization`` header httpx makes from it).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging

import pandas as pd
import pytest
import sqlalchemy as sa

from propensity.pipelines.activation.outbox import RetryPolicy, WebhookSender, deliver_due, enqueue
from propensity.pipelines.activation.push import PushError, PushOptions, destination_from_env, push, traits_from_scores
from propensity.pipelines.redaction import redact, url_secrets
from propensity.pipelines.activation.tables import create_activation_tables, outbox
from propensity.pipelines.cli import main
from propensity.pipelines.serve.db import database_url, make_engine

USER, PASSWORD = "u5erQ", "pAss9Zw"
SIGNING = "whsec_Q7k2"
PATH_TOKEN, QUERY_TOKEN = "tok_M3xR8", "qs_V9yHw2"
WRITE_KEY, API_KEY, SITE_ID = "wk_L1veK3y", "cio_K3yZ", "site-77"
ONE_SHOT = PushOptions(batch_size=10, rate=1000, max_attempts=1)


def _webhook_url(receiver) -> str:
    host = receiver.url.removeprefix("http://")
    return f"http://{USER}:{PASSWORD}@{host}/hooks/{PATH_TOKEN}?key={QUERY_TOKEN}"


def _forms(receiver) -> dict[str, str]:
    """Every form of a secret a receiver could echo, by name."""
    return {
        "password": PASSWORD,
        "user:password": f"{USER}:{PASSWORD}",
        "authorization header": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
        "path token": PATH_TOKEN,
        "query token": QUERY_TOKEN,
        "signing secret": SIGNING,
        "url with userinfo": _webhook_url(receiver),
    }


def _echo(receiver, secret: str, status: int = 500) -> None:
    # the secret starts 4 characters before the 300th of "HTTP <status>: <body>"; a URL starts
    # earlier, so that the cut falls inside its password
    before = 4 if "://" not in secret else secret.index(PASSWORD) + 2
    receiver.default = (status, {}, ("x" * (300 - before - len(f"HTTP {status}: ")) + secret + " tail").encode())


def _leaks(text: str, secret: str) -> bool:
    """Whether any part of ``secret`` that crossed the cut is in ``text``."""
    if "://" in secret:  # a URL: its credentials, not its scheme
        return f"{USER}:" in text or PASSWORD[:2] in text
    return secret[:4] in text


def test_redact_masks_first_then_cuts_and_masks_any_url_userinfo():
    text = "y" * 296 + "s3cretvalue!" + " see https://bob:hunter2@example.com/x"
    out = redact(text, ["s3cretvalue!"], limit=300)
    assert "s3cr" not in out and len(out) <= 303
    assert redact("GET https://bob:hunter2@example.com/x failed") == "GET https://***@example.com/x failed"
    assert redact("postgresql://app:pw@db:5432/x") == "postgresql://***@db:5432/x"
    assert set(url_secrets("https://a%40b:p%3Aw@h/x", whole=False)) >= {"a%40b:p%3Aw", "a@b:p:w", "p:w"}


@pytest.mark.parametrize("form", ["password", "user:password", "authorization header", "path token", "query token",
                                  "signing secret", "url with userinfo"])
def test_outbox_last_error_and_log_never_show_an_echoed_secret(engine, receiver, caplog, form):
    secret = _forms(receiver)[form]
    _echo(receiver, secret)
    with engine.begin() as conn:
        enqueue(conn, idempotency_key="k1", kind="trigger", payload={"a": 1}, now=dt.datetime(2026, 3, 1))
    caplog.set_level(logging.DEBUG)
    with WebhookSender(_webhook_url(receiver), SIGNING) as sender:
        report = deliver_due(engine, sender, now=dt.datetime(2026, 3, 1, 1), policy=RetryPolicy(max_attempts=3))
    assert report.retrying == 1
    # the receiver really got the credentials from the URL (so it could echo them)
    assert receiver.received[0].headers["authorization"] == "Basic " + _forms(receiver)["authorization header"]
    with engine.connect() as conn:
        error = conn.execute(sa.select(outbox.c.last_error)).scalar_one()
    assert error.startswith("HTTP 500: xxx")
    assert not _leaks(error, secret), error
    assert not _leaks(caplog.text, secret)


@pytest.mark.parametrize("form", ["password", "user:password", "authorization header", "path token", "query token",
                                  "signing secret", "url with userinfo"])
def test_a_webhook_push_error_and_log_never_show_an_echoed_secret(sqlite_db, receiver, caplog, form):
    secret = _forms(receiver)[form]
    _echo(receiver, secret, status=400)
    env = {"PROPENSITY_PUSH_WEBHOOK_URL": _webhook_url(receiver), "PROPENSITY_WEBHOOK_SECRET": SIGNING}
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PushError) as failed:
        push(sqlite_db, destination_from_env("webhook", env), _contacts(), options=ONE_SHOT)
    assert "HTTP 400: xxx" in str(failed.value)
    assert not _leaks(str(failed.value), secret), str(failed.value)
    assert not _leaks(caplog.text, secret)


@pytest.mark.parametrize(("to", "secret_name"), [("segment", "write key"), ("segment", "url password"),
                                                 ("customerio", "api key"), ("customerio", "url password")])
def test_segment_and_customerio_push_errors_never_show_an_echoed_secret(sqlite_db, receiver, caplog, to, secret_name):
    host = receiver.url.removeprefix("http://")
    base = f"http://{USER}:{PASSWORD}@{host}"  # a proxy or data plane behind basic auth
    env = {"SEGMENT_WRITE_KEY": WRITE_KEY, "SEGMENT_URL": base, "CUSTOMERIO_SITE_ID": SITE_ID,
           "CUSTOMERIO_API_KEY": API_KEY, "CUSTOMERIO_TRACK_URL": base}
    secret = {"write key": WRITE_KEY, "api key": API_KEY, "url password": PASSWORD}[secret_name]
    _echo(receiver, f"{secret} at {base}", status=400)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PushError) as failed:
        push(sqlite_db, destination_from_env(to, env), _contacts(), options=ONE_SHOT)
    assert "HTTP 400: xxx" in str(failed.value)
    assert not _leaks(str(failed.value), secret), str(failed.value)
    assert not _leaks(str(failed.value), PASSWORD)
    assert not _leaks(caplog.text, secret)


def test_outbox_list_masks_url_credentials_in_errors_stored_by_an_older_version(tmp_path, capsys):
    engine = make_engine(database_url(tmp_path))
    create_activation_tables(engine)
    with engine.begin() as conn:
        enqueue(conn, idempotency_key="k1", kind="trigger", payload={"a": 1}, now=dt.datetime(2026, 3, 1))
        conn.execute(sa.update(outbox).values(
            attempts=1, last_error=f"ConnectError: http://{USER}:{PASSWORD}@hooks.local/x refused"))
    engine.dispose()
    assert main(["--workspace", str(tmp_path), "outbox", "list"]) == 0
    shown = capsys.readouterr().out
    assert "ConnectError" in shown and "***@hooks.local" in " ".join(shown.split())
    assert PASSWORD[:4] not in shown and USER not in shown


def _contacts():
    frame = pd.DataFrame({"contact_id": ["a", "b"], "as_of": pd.Timestamp("2026-03-01"),
                          "rule_score": [1.0, 2.0], "band": ["cold", "warm"]})
    return traits_from_scores(frame)
