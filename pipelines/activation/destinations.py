"""Where a push sends traits: Customer.io, a Segment-spec endpoint, a signed webhook, over one
rate-limited, retried HTTP client; credentials only from the environment."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from propensity.pipelines.activation.outbox import (
    ERROR_CHARS,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    parse_retry_after,
    sign,
)
from propensity.pipelines.activation.pacing import TokenBucket
from propensity.pipelines.activation.retrying import DeliveryFailure as _HTTPFailure
from propensity.pipelines.activation.retrying import retried
from propensity.pipelines.activation.traits import ContactTraits, message_id
from propensity.pipelines.redaction import (
    basic_secrets,
    guard_http_log,
    redact,
    release_http_log,
    url_secrets,
)

__all__ = ["DESTINATIONS", "CustomerIOTrack", "Destination", "HttpClient", "PushOptions", "SegmentBatch", "SignedWebhook",
           "destination_from_env"]

log = logging.getLogger(__name__)

DESTINATIONS = ("customerio", "segment", "webhook")


# -- rate limit and HTTP ------------------------------------------------------------------------


@dataclass(frozen=True)
class PushOptions:
    """Batching, rate and retry settings of one push."""

    batch_size: int = 100
    rate: float = 20.0  # requests per second
    burst: float | None = None  # requests allowed at once after a pause (default: one second's worth)
    max_attempts: int = 5
    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    max_retry_after_seconds: float = 300.0  # a longer Retry-After fails the run (rerun later)
    timeout_seconds: float = 30.0


class HttpClient:
    """One client, the token bucket, retries, and redaction of the destination's secrets."""

    def __init__(self, options: PushOptions, secrets: Sequence[str], bucket: TokenBucket,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.options = options
        self.secrets = list(secrets)
        self._guarded = guard_http_log(self.secrets)  # httpx logs each request's URL
        self.bucket = bucket
        self.client = httpx.Client(timeout=options.timeout_seconds)
        self._sleep = sleep
        self.requests = 0

    def send(self, method: str, url: str, **kwargs) -> None:
        retried(lambda _: self._once(method, url, **kwargs), self.options, self._sleep)

    def _once(self, method: str, url: str, **kwargs) -> None:
        self.bucket.acquire()
        self.requests += 1
        try:
            response = self.client.request(method, url, **kwargs)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _HTTPFailure(self.redact(f"{type(exc).__name__}: {exc}"),
                               retryable=not isinstance(exc, httpx.InvalidURL)) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
        if retry_after is not None and retry_after > self.options.max_retry_after_seconds:
            raise _HTTPFailure(f"HTTP {status}: asked to wait {retry_after:.0f} s (Retry-After), more than "
                               f"{self.options.max_retry_after_seconds:.0f} s", retryable=False)
        # no URL in the message: a webhook URL (e.g. Customer.io's) is itself a credential
        message = self.redact(f"HTTP {status}: {response.text}")  # redacted whole, then cut
        raise _HTTPFailure(message, retryable=status in (408, 425, 429) or status >= 500, retry_after=retry_after)

    def redact(self, text: str) -> str:
        return redact(text, self.secrets, limit=ERROR_CHARS)

    def close(self) -> None:
        self.client.close()
        release_http_log(self._guarded)
        self._guarded = ()


# -- destinations -------------------------------------------------------------------------------


class Destination:
    """Where scores go. Subclasses send one batch of contacts (one or more requests)."""

    name: str = ""
    secrets: tuple[str, ...] = ()

    def send(self, http: HttpClient, batch: Sequence[ContactTraits]) -> Mapping[str, str] | None:
        """Send ``batch``; return ``{contact_id: reason}`` for contacts the receiver refused while
        taking the rest (a partial batch error), or None when it took them all."""
        raise NotImplementedError

    def requests_made(self, http: HttpClient) -> int:
        """Requests this destination sent (a CRM destination sends through its own client)."""
        return http.requests

    def preview(self, batch: Sequence[ContactTraits]) -> dict:
        """What :meth:`send` would send for ``batch`` (no credentials), for ``--dry-run``."""
        raise NotImplementedError


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SegmentBatch(Destination):
    """Identify calls in a Segment-spec ``/v1/batch`` (Segment, RudderStack, Customer.io Data Pipelines).

    Authenticated as Segment does: HTTP Basic with the write key as user and no password.
    """

    def __init__(self, base_url: str, write_key: str, *, name: str = "segment") -> None:
        self.name = name
        self.url = base_url.rstrip("/") + "/v1/batch"
        self._key = write_key
        self.secrets = (*basic_secrets(write_key, ""), *url_secrets(base_url, whole=False))

    def _body(self, batch: Sequence[ContactTraits]) -> dict:
        now = _now_iso()
        return {"batch": [{"type": "identify", "userId": c.contact_id, "traits": c.traits,
                           "messageId": message_id(self.name, c), "timestamp": now} for c in batch],
                "sentAt": now, "context": {"library": {"name": "propensity"}}}

    def send(self, http: HttpClient, batch: Sequence[ContactTraits]) -> None:
        http.send("POST", self.url, json=self._body(batch), auth=httpx.BasicAuth(self._key, ""))

    def preview(self, batch: Sequence[ContactTraits]) -> dict:
        return {"method": "POST", "url": self.url, "json": self._body(batch)}


class CustomerIOTrack(Destination):
    """Customer.io's Track API: ``PUT /api/v1/customers/{id}`` with the traits as attributes.

    One request per contact (the v1 API has no batch call); the batch is acknowledged when all of
    its contacts are. HTTP Basic with site id and API key.
    """

    name = "customerio"

    def __init__(self, base_url: str, site_id: str, api_key: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = (site_id, api_key)
        # the site id alone is not secret, and redacting it would hide which workspace failed
        self.secrets = (*basic_secrets(site_id, api_key), *url_secrets(base_url, whole=False))

    def _url(self, contact_id: str) -> str:
        return f"{self.base_url}/api/v1/customers/{quote(contact_id, safe='')}"

    def send(self, http: HttpClient, batch: Sequence[ContactTraits]) -> None:
        for contact in batch:
            http.send("PUT", self._url(contact.contact_id), json=contact.traits, auth=httpx.BasicAuth(*self._auth))

    def preview(self, batch: Sequence[ContactTraits]) -> dict:
        return {"method": "PUT", "requests": [{"url": self._url(c.contact_id), "json": c.traits} for c in batch]}


class SignedWebhook(Destination):
    """A JSON POST of the batch, signed like the outbox's webhooks (``X-Propensity-Signature``)."""

    name = "webhook"

    def __init__(self, url: str, secret: str) -> None:
        self.url = url
        self._secret = secret
        self.secrets = (secret, *url_secrets(url))  # a webhook URL often carries its own token

    def _body(self, batch: Sequence[ContactTraits]) -> dict:
        key = hashlib.sha256("\x1f".join(message_id(self.name, c) for c in batch).encode()).hexdigest()[:32]
        return {"type": "propensity.scores", "idempotency_key": key, "sent_at": _now_iso(),
                "contacts": [{"contact_id": c.contact_id, "traits": c.traits} for c in batch]}

    def send(self, http: HttpClient, batch: Sequence[ContactTraits]) -> None:
        body = self._body(batch)
        content = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        http.send("POST", self.url, content=content, headers={
            "Content-Type": "application/json", SIGNATURE_HEADER: sign(self._secret, content, int(time.time())),
            IDEMPOTENCY_HEADER: body["idempotency_key"]})

    def preview(self, batch: Sequence[ContactTraits]) -> dict:
        return {"method": "POST", "url": "(the webhook URL from the environment)", "json": self._body(batch)}


def destination_from_env(to: str, environ: Mapping[str, str] | None = None) -> Destination:
    """The destination ``to`` with its URL and credentials from the environment.

    customerio: ``CUSTOMERIO_CDP_API_KEY`` (Data Pipelines, Segment-compatible ``/v1/batch`` at
    ``CUSTOMERIO_CDP_URL``, default https://cdp.customer.io) if set, else the Track API with
    ``CUSTOMERIO_SITE_ID`` + ``CUSTOMERIO_API_KEY`` at ``CUSTOMERIO_TRACK_URL`` (default
    https://track.customer.io). segment: ``SEGMENT_WRITE_KEY`` at ``SEGMENT_URL`` (default
    https://api.segment.io; a RudderStack data plane URL works too). webhook:
    ``PROPENSITY_PUSH_WEBHOOK_URL`` (else ``PROPENSITY_WEBHOOK_URL``) signed with
    ``PROPENSITY_WEBHOOK_SECRET``.
    """
    env = os.environ if environ is None else environ

    def need(*names: str) -> list[str]:
        missing = [n for n in names if not env.get(n)]
        if missing:
            raise ValueError(f"push --to {to} needs the environment variable(s) {', '.join(missing)}")
        return [env[n] for n in names]

    if to == "customerio":
        if env.get("CUSTOMERIO_CDP_API_KEY"):
            return SegmentBatch(env.get("CUSTOMERIO_CDP_URL") or "https://cdp.customer.io",
                                env["CUSTOMERIO_CDP_API_KEY"], name="customerio")
        site_id, api_key = need("CUSTOMERIO_SITE_ID", "CUSTOMERIO_API_KEY")
        return CustomerIOTrack(env.get("CUSTOMERIO_TRACK_URL") or "https://track.customer.io", site_id, api_key)
    if to == "segment":
        (write_key,) = need("SEGMENT_WRITE_KEY")
        return SegmentBatch(env.get("SEGMENT_URL") or "https://api.segment.io", write_key)
    if to == "webhook":
        url = env.get("PROPENSITY_PUSH_WEBHOOK_URL") or env.get("PROPENSITY_WEBHOOK_URL")
        if not url:
            raise ValueError("push --to webhook needs PROPENSITY_PUSH_WEBHOOK_URL (or PROPENSITY_WEBHOOK_URL)")
        (secret,) = need("PROPENSITY_WEBHOOK_SECRET")
        return SignedWebhook(url, secret)
    raise ValueError(f"push --to {to!r}: expected one of {', '.join(DESTINATIONS)}")
