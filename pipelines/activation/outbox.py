"""The durable outbox: signed webhooks delivered at least once, with backoff, dead letters and replay.

A message is a row written in the same transaction as whatever caused it (:func:`enqueue`).
:func:`deliver_due` sends the rows that are due, one POST each, signed with
``X-Propensity-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` (Stripe's scheme, so a
receiver can reject stale or forged calls). A failure schedules the next attempt with exponential
backoff and jitter (stored on the row: ``attempts``, ``next_attempt_at``); after
``max_attempts`` the row moves to the dead-letter table, and :func:`replay` moves it back.

Delivery is at-least-once: a crash between a receiver's 2xx and our update sends the message
again. Every message carries its idempotency key (in the body and in
``X-Propensity-Idempotency-Key``) so receivers can drop the second copy.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import hmac
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx
import sqlalchemy as sa

from propensity.pipelines.activation.tables import dead_letters, outbox
from propensity.pipelines.redaction import (
    guard_http_log,
    redact,
    release_http_log,
    url_secrets,
)

__all__ = [
    "DeliveryError",
    "DeliveryReport",
    "RetryPolicy",
    "WebhookSender",
    "attempts_text",
    "backoff_seconds",
    "deliver_due",
    "enqueue",
    "list_messages",
    "redact",
    "replay",
    "sign",
    "url_secrets",
    "verify_signature",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Propensity-Signature"
IDEMPOTENCY_HEADER = "X-Propensity-Idempotency-Key"
ERROR_CHARS = 300  # of a receiver's answer kept in last_error (after redaction)


def utcnow() -> dt.datetime:
    """Now in UTC, naive (the project's timestamp convention)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


# -- signing -----------------------------------------------------------------------------------


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header value for ``body`` sent at ``timestamp`` (unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, header: str | None, body: bytes, *, tolerance_seconds: float = 300,
                     now: float | None = None) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and is at most ``tolerance_seconds`` old.

    This is what a receiver runs; the tolerance stops a captured request being replayed later.
    """
    if not header:
        return False
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_seconds:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


# -- retry schedule ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how far apart delivery is retried before a message is dead-lettered."""

    max_attempts: int = 8
    initial_seconds: float = 5.0
    max_seconds: float = 3600.0
    multiplier: float = 2.0


def backoff_seconds(attempts: int, policy: RetryPolicy, rng: random.Random) -> float:
    """The wait after the ``attempts``-th failure: exponential, capped, with "equal jitter".

    Half the exponential delay is fixed and half is random, so retries keep spreading out while
    many messages that failed together (a receiver outage) do not all come back at once.
    """
    delay = min(policy.max_seconds, policy.initial_seconds * policy.multiplier ** max(attempts - 1, 0))
    return delay / 2 + rng.uniform(0, delay / 2)


# -- enqueue / list / replay -------------------------------------------------------------------


def _body(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, allow_nan=False)


def enqueue(conn: sa.Connection, *, idempotency_key: str, kind: str, payload: dict,
            trigger: str | None = None, contact_id: str | None = None,
            now: dt.datetime | None = None, hold_seconds: float = 0.0) -> int:
    """Queue one message in the caller's transaction; returns its outbox id.

    ``hold_seconds``: not sent before then, unless :func:`amend` releases it sooner (a message
    whose payload is completed once the transaction is committed).
    """
    created = now or utcnow()
    result = conn.execute(sa.insert(outbox).values(
        idempotency_key=idempotency_key, kind=kind, trigger=trigger, contact_id=contact_id, payload=_body(payload),
        created_at=created, next_attempt_at=created + dt.timedelta(seconds=hold_seconds), attempts=0,
    ))
    return int(result.inserted_primary_key[0])


def amend(conn: sa.Connection, outbox_id: int, payload: dict, release_at: dt.datetime) -> bool:
    """Replace a held message's payload and make it due at ``release_at``; False (nothing changed)
    when it was sent, or is being sent, already."""
    result = conn.execute(sa.update(outbox).where(outbox.c.id == outbox_id, outbox.c.delivered_at.is_(None),
                                                  outbox.c.claim.is_(None), outbox.c.attempts == 0)
                          .values(payload=_body(payload), next_attempt_at=release_at))
    return result.rowcount == 1


def list_messages(engine: sa.Engine, *, dead: bool = False, pending_only: bool = False,
                  limit: int = 50) -> list[dict]:
    """The newest outbox rows (or dead letters), newest first, as plain dicts."""
    table = dead_letters if dead else outbox
    query = sa.select(table).order_by(table.c.id.desc()).limit(limit)
    if pending_only and not dead:
        query = query.where(outbox.c.delivered_at.is_(None))
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def replay(engine: sa.Engine, ids: Sequence[int] = (), *, all_dead: bool = False,
           now: dt.datetime | None = None) -> int:
    """Queue messages again; returns how many.

    With ``all_dead`` (or dead-letter ``ids`` together with it) dead letters move back into the
    outbox, under their own outbox id. Without it, ``ids`` are outbox ids and those messages
    (delivered or not) are sent again, under the same idempotency key. Either way the history
    stays: ``attempts`` keeps counting, ``last_error`` stays until the next attempt, ``replays``
    goes up by one, and the retry limit and backoff count from ``attempts_at_replay``.
    """
    now = now or utcnow()
    with engine.begin() as conn:
        if all_dead:
            query = sa.select(dead_letters)
            if ids:
                query = query.where(dead_letters.c.id.in_(list(ids)))
            rows = conn.execute(query.order_by(dead_letters.c.id)).all()
            for row in rows:
                values = dict(
                    idempotency_key=row.idempotency_key, kind=row.kind, trigger=row.trigger,
                    contact_id=row.contact_id, payload=row.payload, created_at=row.created_at,
                    next_attempt_at=now, attempts=row.attempts, last_error=row.last_error, delivered_at=None,
                    replays=row.replays + 1, attempts_at_replay=row.attempts)
                taken = conn.execute(sa.select(outbox.c.id).where(outbox.c.id == row.outbox_id)).first()
                if taken is None:  # always, but in a store whose ids were reused before AUTOINCREMENT
                    values["id"] = row.outbox_id
                conn.execute(sa.insert(outbox).values(**values))
                conn.execute(sa.delete(dead_letters).where(dead_letters.c.id == row.id))
            return len(rows)
        if not ids:
            raise ValueError("replay: give outbox ids, or --dead to replay dead letters")
        found = conn.execute(sa.update(outbox).where(outbox.c.id.in_(list(ids))).values(
            delivered_at=None, next_attempt_at=now, claim=None, replays=outbox.c.replays + 1,
            attempts_at_replay=outbox.c.attempts)).rowcount
        if found != len(set(ids)):
            raise ValueError(f"replay: {len(set(ids)) - found} of the ids {sorted(set(ids))} are not in the outbox "
                             "(dead letters need --dead)")
        return found


def attempts_text(row: Mapping) -> str:
    """``attempts`` as ``propensity outbox list`` shows it: with the replays, when there were any."""
    replays = row.get("replays") or 0
    if not replays:
        return str(row["attempts"])
    since = row["attempts"] - (row.get("attempts_at_replay") or 0)
    return f"{row['attempts']} ({since} since replay {replays})"


# -- delivery ----------------------------------------------------------------------------------


class DeliveryError(RuntimeError):
    """A failed delivery attempt. ``permanent`` ones (a 4xx other than 408/425/429) are not retried."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class WebhookSender:
    """POSTs a message body, signed, to one URL.

    Parameters
    ----------
    url
        The receiver (e.g. a Customer.io webhook-triggered campaign, or your own endpoint).
    secret
        The signing secret (from ``PROPENSITY_WEBHOOK_SECRET``); never logged.
    timeout
        Seconds per request.
    client
        An ``httpx.Client`` to reuse; one is made (and closed by :meth:`close`) otherwise.
    """

    def __init__(self, url: str, secret: str, *, timeout: float = 10.0, client: httpx.Client | None = None) -> None:
        if not secret:
            raise ValueError("the webhook signing secret is empty: set PROPENSITY_WEBHOOK_SECRET")
        self.url = url
        self._secret = secret
        self._secrets = (secret, *url_secrets(url))
        self._guarded = guard_http_log(self._secrets)  # httpx logs each request's URL
        self._own_client = client is None
        self._client = client or httpx.Client(timeout=timeout)

    @classmethod
    def from_env(cls, url_env: str = "PROPENSITY_WEBHOOK_URL", secret_env: str = "PROPENSITY_WEBHOOK_SECRET",
                 *, timeout: float = 10.0, environ: Mapping[str, str] | None = None) -> WebhookSender:
        """A sender whose URL and secret come from the environment (credentials live nowhere else)."""
        environ = os.environ if environ is None else environ
        missing = [name for name in (url_env, secret_env) if not environ.get(name)]
        if missing:
            raise ValueError(f"webhook delivery needs the environment variable(s) {', '.join(missing)}")
        return cls(environ[url_env], environ[secret_env], timeout=timeout)

    def __repr__(self) -> str:
        return "WebhookSender(...)"  # neither the secret nor the URL (a webhook URL may carry a token)

    def send(self, body: bytes, idempotency_key: str) -> None:
        """Send once; raises :class:`DeliveryError` unless the receiver answers 2xx."""
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, body, int(time.time())),
            IDEMPOTENCY_HEADER: idempotency_key,
            "User-Agent": "propensity-outbox",
        }
        try:
            response = self._client.post(self.url, content=body, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise DeliveryError(redact(f"{type(exc).__name__}: {exc}", self._secrets, limit=ERROR_CHARS)) from None
        if 200 <= response.status_code < 300:
            return
        status = response.status_code
        # redacted whole, then cut: a secret crossing the cut would leak its prefix otherwise
        raise DeliveryError(redact(f"HTTP {status}: {response.text}", self._secrets, limit=ERROR_CHARS),
                            permanent=400 <= status < 500 and status not in (408, 425, 429),
                            retry_after=parse_retry_after(response.headers.get("Retry-After")))

    def close(self) -> None:
        if self._own_client:
            self._client.close()
        release_http_log(self._guarded)
        self._guarded = ()

    def __enter__(self) -> WebhookSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


@dataclass(frozen=True)
class DeliveryReport:
    """What one :func:`deliver_due` pass did."""

    attempted: int
    delivered: int
    retrying: int
    dead: int
    skipped: int  # rows another deliverer claimed first


def deliver_due(engine: sa.Engine, sender: WebhookSender, now: dt.datetime | None = None, limit: int = 100,
                *, policy: RetryPolicy = RetryPolicy(), rng: random.Random | None = None,
                lease_seconds: float = 300.0, record_every: int = 50) -> DeliveryReport:
    """Send the outbox rows that are due (oldest first), at most ``limit``.

    The rows are claimed first, in one transaction: their ``next_attempt_at`` moves
    ``lease_seconds`` ahead and they get this call's claim token, only if they are still due. So
    the service's background task and a ``propensity outbox deliver`` running at the same time
    never send the same row, and a deliverer that dies mid-send leaves its rows to be retried when
    the lease runs out. Outcomes are written every ``record_every`` sends (one commit each, not
    one per message); a crash in between re-sends at most those: at-least-once.
    """
    now = now or utcnow()
    rng = rng or random.Random()
    token = uuid.uuid4().hex
    with engine.begin() as conn:
        due = conn.execute(
            sa.select(outbox.c.id).where(outbox.c.delivered_at.is_(None), outbox.c.next_attempt_at <= now)
            .order_by(outbox.c.next_attempt_at, outbox.c.id).limit(limit)
        ).scalars().all()
        claimed = []
        if due:
            conn.execute(
                sa.update(outbox)
                .where(outbox.c.id.in_(due), outbox.c.delivered_at.is_(None), outbox.c.next_attempt_at <= now)
                .values(next_attempt_at=now + dt.timedelta(seconds=lease_seconds), claim=token))
            claimed = conn.execute(sa.select(outbox).where(outbox.c.claim == token)
                                   .order_by(outbox.c.created_at, outbox.c.id)).all()
    counts = {"attempted": len(claimed), "delivered": 0, "retrying": 0, "dead": 0, "skipped": len(due) - len(claimed)}
    outcomes: list[tuple[sa.Row, DeliveryError | None]] = []
    for message in claimed:
        try:
            sender.send(message.payload.encode(), message.idempotency_key)
            outcomes.append((message, None))
        except DeliveryError as exc:
            outcomes.append((message, exc))
        if len(outcomes) >= record_every:
            _record(engine, outcomes, token, now, policy, rng, counts)
            outcomes = []
    _record(engine, outcomes, token, now, policy, rng, counts)
    return DeliveryReport(**counts)


def _record(engine: sa.Engine, outcomes: list[tuple[sa.Row, DeliveryError | None]], token: str, now: dt.datetime,
            policy: RetryPolicy, rng: random.Random, counts: dict[str, int]) -> None:
    if not outcomes:
        return
    delivered = [{"b_id": m.id, "b_attempts": m.attempts + 1} for m, exc in outcomes if exc is None]
    with engine.begin() as conn:
        if delivered:
            conn.execute(
                sa.update(outbox).where(outbox.c.id == sa.bindparam("b_id"), outbox.c.claim == token)
                .values(delivered_at=utcnow(), attempts=sa.bindparam("b_attempts"), last_error=None, claim=None),
                delivered)
        for message, exc in outcomes:
            if exc is not None:
                counts[_record_failure(conn, message, exc, now, policy, rng)] += 1
    counts["delivered"] += len(delivered)


def _record_failure(conn: sa.Connection, message: sa.Row, exc: DeliveryError, now: dt.datetime,
                    policy: RetryPolicy, rng: random.Random) -> str:
    attempts = message.attempts + 1
    tries = attempts - message.attempts_at_replay  # since the last replay: the limit counts these
    error = redact(str(exc), limit=1000)  # the sender redacted its secrets; URL userinfo too, here
    if exc.permanent or tries >= policy.max_attempts:
        conn.execute(sa.insert(dead_letters).values(
            outbox_id=message.id, idempotency_key=message.idempotency_key, kind=message.kind,
            trigger=message.trigger, contact_id=message.contact_id, payload=message.payload,
            created_at=message.created_at, attempts=attempts, last_error=error, dead_at=now,
            replays=message.replays, attempts_at_replay=message.attempts_at_replay))
        conn.execute(sa.delete(outbox).where(outbox.c.id == message.id))
        log.warning("outbox message %s dead after %d attempts: %s", message.id, attempts, error)
        return "dead"
    wait = backoff_seconds(tries, policy, rng)
    if exc.retry_after is not None:
        wait = max(wait, min(exc.retry_after, policy.max_seconds))
    conn.execute(sa.update(outbox).where(outbox.c.id == message.id).values(
        attempts=attempts, last_error=error, next_attempt_at=now + dt.timedelta(seconds=wait), claim=None))
    log.info("outbox message %s failed (attempt %d), next in %.0f s: %s", message.id, attempts, wait, error)
    return "retrying"
