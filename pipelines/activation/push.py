"""``propensity push``: scores as traits to Customer.io, Segment-spec endpoints or a signed webhook.

Each contact's traits are ``intent_score``, ``intent_band``, ``propensity`` (when the scores are a
learned model's), ``top_reasons`` and, when the scores say why they last changed,
``score_change_reason``. Only contacts whose traits differ from what the destination
last acknowledged are sent (``activation_push_state``, keyed by destination + contact). Requests
are batched, rate-limited by a token bucket, retried with backoff (a 429's ``Retry-After`` is
honoured), and the state is written after every acknowledged batch, so a run that fails part-way
is resumed by running it again. Credentials come only from the environment and are redacted from
every error message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import pandas as pd
import sqlalchemy as sa

from propensity.pipelines.activation.holdout import HoldoutConfig, assign, record_exposures
from propensity.pipelines.activation.outbox import ERROR_CHARS, IDEMPOTENCY_HEADER, SIGNATURE_HEADER, parse_retry_after, sign
from propensity.pipelines.activation.pacing import TokenBucket
from propensity.pipelines.redaction import basic_secrets, guard_http_log, redact, release_http_log, url_secrets
from propensity.pipelines.activation.retrying import DeliveryFailure as _HTTPFailure
from propensity.pipelines.activation.retrying import retried
from propensity.pipelines.activation.score_files import read_scores, read_scores_table
from propensity.pipelines.activation.tables import create_activation_tables, push_state, upsert

__all__ = [
    "ContactTraits",
    "CustomerIOTrack",
    "Destination",
    "PushError",
    "PushOptions",
    "PushReport",
    "SegmentBatch",
    "SignedWebhook",
    "TokenBucket",
    "acknowledge",
    "change_reason_text",
    "destination_from_env",
    "pending_contacts",
    "push",
    "read_scores",
    "read_scores_table",
    "summarise_preview",
    "traits_from_scores",
    "write_previews",
]

log = logging.getLogger(__name__)

DESTINATIONS = ("customerio", "segment", "webhook")


class PushError(RuntimeError):
    """A push that could not finish; the message says what was acknowledged before it stopped."""


# -- scores -> traits (pure) --------------------------------------------------------------------


@dataclass(frozen=True)
class ContactTraits:
    """The traits to send for one contact and a fingerprint of them (what "changed" compares)."""

    contact_id: str
    traits: dict
    fingerprint: str


def traits_from_scores(frame: pd.DataFrame, *, source: str = "scores", top_n: int = 3) -> list[ContactTraits]:
    """One :class:`ContactTraits` per contact, from the latest ``as_of`` row of each.

    ``intent_score`` is ``learned_score`` when present, else ``rule_score`` (both 0-5);
    ``top_reasons`` is a ``top_reasons`` column, else the ``reason_1..n`` columns of
    ``propensity explain`` output, else the names of the ``top_n`` largest positive
    ``points__*`` columns (the rules that contributed most).

    Raises
    ------
    ValueError
        Naming ``source`` and the column or row that is missing or empty.
    """
    if "contact_id" not in frame:
        raise ValueError(f"{source}: no contact_id column (columns: {', '.join(map(str, frame.columns))})")
    score_column = next((c for c in ("learned_score", "rule_score") if c in frame), None)
    if score_column is None:
        raise ValueError(f"{source}: no learned_score or rule_score column "
                         f"(columns: {', '.join(map(str, frame.columns))})")
    empty = frame["contact_id"].isna() | frame[score_column].isna()
    if empty.any():
        row = int(empty.to_numpy().nonzero()[0][0]) + 1  # 1-based data row of the file
        field_name = "contact_id" if frame["contact_id"].isna().iloc[row - 1] else score_column
        raise ValueError(f"{source}: row {row}: {field_name} is empty")
    frame = _latest_per_contact(frame, source)
    points = [c for c in frame.columns if str(c).startswith("points__")]
    out = []
    for row in frame.to_dict("records"):
        traits: dict = {"intent_score": round(float(row[score_column]), 2)}
        if "band" in row and _present(row["band"]):
            traits["intent_band"] = str(row["band"])
        if "probability" in row and _present(row["probability"]):
            traits["propensity"] = round(float(row["probability"]), 4)
        reasons = _reasons(row, points, top_n)
        if reasons is not None:
            traits["top_reasons"] = reasons
        if (change := change_reason_text(row)) is not None:
            traits["score_change_reason"] = change
        out.append(ContactTraits(str(row["contact_id"]), traits, fingerprint(traits)))
    return out


def _latest_per_contact(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    if "as_of" in frame:
        return frame.sort_values("as_of", kind="stable").drop_duplicates("contact_id", keep="last")
    duplicated = frame["contact_id"].duplicated()
    if duplicated.any():
        raise ValueError(f"{source}: contact {frame['contact_id'][duplicated].iloc[0]!r} has several rows and "
                         "there is no as_of column to pick the latest")
    return frame


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _reasons(row: dict, points: list[str], top_n: int) -> list[str] | None:
    if "top_reasons" in row and row["top_reasons"] is not None:
        value = row["top_reasons"]
        if isinstance(value, str):
            value = json.loads(value) if value.startswith("[") else [v.strip() for v in value.split(";") if v.strip()]
        return [str(v) for v in list(value)[:top_n]]
    explained = [row[f"reason_{k}"] for k in range(1, top_n + 1) if f"reason_{k}" in row]
    if explained:
        # `propensity explain` output: reason_k is already in words, strongest first
        return [str(text) for text in explained if _present(text) and str(text).strip()]
    if not points:
        return None
    ranked = sorted(((float(row[c]), c) for c in points if _present(row[c]) and float(row[c]) > 0),
                    key=lambda item: (-item[0], item[1]))
    return [name.removeprefix("points__") for _, name in ranked[:top_n]]


def change_reason_text(row: dict) -> str | None:
    """The top reason for the score's last change: the service's ``last_split`` (JSON), else a
    ``change_reason`` / ``change_reason_1`` column (`propensity explain --since --changed-band`)."""
    split = row.get("last_split")
    if isinstance(split, str) and split:
        top = json.loads(split).get("top_reason")
        return None if top is None else f"{top['reason']} ({top['points']:+.2f})"
    for column in ("change_reason", "change_reason_1"):
        if column in row and _present(row[column]) and str(row[column]).strip():
            points = row.get(f"{column}_points")
            return str(row[column]) + (f" ({float(points):+.2f})" if _present(points) else "")
    return None


def fingerprint(traits: dict) -> str:
    return hashlib.sha256(json.dumps(traits, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def message_id(destination: str, contact: ContactTraits) -> str:
    """Same destination, contact and traits -> same id, so a retried send can be deduplicated."""
    return hashlib.sha256(f"{destination}\x1f{contact.contact_id}\x1f{contact.fingerprint}".encode()).hexdigest()[:32]


# -- push state ---------------------------------------------------------------------------------


def pending_contacts(engine: sa.Engine, destination: str, contacts: Sequence[ContactTraits]) -> list[ContactTraits]:
    """The contacts whose traits differ from what ``destination`` last acknowledged."""
    with engine.connect() as conn:
        known = dict(conn.execute(sa.select(push_state.c.contact_id, push_state.c.fingerprint)
                                  .where(push_state.c.destination == destination)).all())
    return [c for c in contacts if known.get(c.contact_id) != c.fingerprint]


def acknowledge(engine: sa.Engine, destination: str, batch: Sequence[ContactTraits]) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        upsert(conn, push_state, [
            {"destination": destination, "contact_id": c.contact_id, "fingerprint": c.fingerprint,
             "traits": json.dumps(c.traits, sort_keys=True), "pushed_at": now} for c in batch])


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


class _Http:
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

    def send(self, http: _Http, batch: Sequence[ContactTraits]) -> Mapping[str, str] | None:
        """Send ``batch``; return ``{contact_id: reason}`` for contacts the receiver refused while
        taking the rest (a partial batch error), or None when it took them all."""
        raise NotImplementedError

    def requests_made(self, http: _Http) -> int:
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

    def send(self, http: _Http, batch: Sequence[ContactTraits]) -> None:
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

    def send(self, http: _Http, batch: Sequence[ContactTraits]) -> None:
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

    def send(self, http: _Http, batch: Sequence[ContactTraits]) -> None:
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


# -- the push -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushReport:
    """What a push did (or, with ``dry_run``, would do)."""

    destination: str
    contacts: int  # in the scores
    unchanged: int  # skipped: the destination already has these traits
    sent: int  # contacts acknowledged in this run
    batches: int
    requests: int
    dry_run: bool
    preview: dict | None = field(default=None)
    held_out: int = 0  # changed contacts not sent because they are in the holdout
    refused: dict = field(default_factory=dict)  # contact_id -> why the receiver refused it (not recorded)


def summarise_preview(preview: dict, show: int = 3) -> tuple[dict, int]:
    """``preview`` with each list of contacts or requests cut to its first ``show`` items, the
    cut said in the list itself; and how many items were left out in all.

    What ``push --dry-run`` prints: a batch of 100 contacts is ~20,000 characters of JSON, and
    cutting the text instead (as it did) made it invalid JSON.
    """
    left_out = 0

    def walk(value):
        nonlocal left_out
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list) and len(value) > show and all(isinstance(v, dict) for v in value):
            left_out += len(value) - show
            return [walk(v) for v in value[:show]] + [f"... and {len(value) - show} more in this batch"]
        return value

    return walk(preview), left_out


def write_previews(destination: Destination, contacts: Sequence[ContactTraits], batch_size: int,
                   path: str | Path) -> int:
    """Every request a push would send, one JSON object per batch per line (no credentials)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    batches = 0
    with path.open("w", encoding="utf-8") as out:
        for batch in _batches(contacts, batch_size):
            out.write(json.dumps(destination.preview(batch), default=str, sort_keys=True) + "\n")
            batches += 1
    return batches


def _batches(items: Sequence[ContactTraits], size: int) -> Iterator[Sequence[ContactTraits]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def push(engine: sa.Engine, destination: Destination, contacts: Sequence[ContactTraits], *,
         options: PushOptions = PushOptions(), dry_run: bool = False, preview_out: str | Path | None = None,
         sleep: Callable[[float], None] = time.sleep, holdout: HoldoutConfig | None = None) -> PushReport:
    """Send the contacts whose traits changed since the last push to ``destination``.

    With ``dry_run`` nothing is sent or recorded; the report's ``preview`` is the first batch, and
    ``preview_out`` (a path) receives every batch's request as JSON lines. With a ``holdout``
    (whose ``push`` is on), held-out contacts are not sent; every changed contact's first push
    (or, held out, the push it did not get) is recorded as an exposure for ``propensity lift``.

    Raises
    ------
    PushError
        When a batch still fails after retries (or is refused); every batch acknowledged before it
        is recorded, so running the push again sends only what is left.
    """
    if options.batch_size < 1:
        raise ValueError("batch size must be at least 1")
    create_activation_tables(engine)
    pending = pending_contacts(engine, destination.name, contacts)
    unchanged = len(contacts) - len(pending)
    pending, held_out = _apply_holdout(engine, holdout, destination.name, pending, record=not dry_run)
    total = math.ceil(len(pending) / options.batch_size)
    if dry_run:
        preview = destination.preview(pending[:options.batch_size]) if pending else None
        if preview_out is not None:
            write_previews(destination, pending, options.batch_size, preview_out)
        return PushReport(destination.name, len(contacts), unchanged, 0, total, 0, True, preview, held_out)
    http = _Http(options, destination.secrets, TokenBucket(options.rate, options.burst, sleep=sleep), sleep=sleep)
    sent, refused = 0, {}
    try:
        for number, batch in enumerate(_batches(pending, options.batch_size), start=1):
            try:
                refused_here = destination.send(http, batch) or {}
            except _HTTPFailure as exc:
                raise PushError(
                    f"push to {destination.name}: batch {number}/{total} failed: {exc}. {sent:,} contacts were "
                    f"acknowledged before it and are recorded; run the push again to send the other "
                    f"{len(pending) - sent:,}") from None
            # a refused contact is not recorded: the next push tries it again
            refused.update(refused_here)
            acknowledge(engine, destination.name, [c for c in batch if c.contact_id not in refused_here])
            sent += len(batch) - len(refused_here)
            log.info("push to %s: batch %d/%d acknowledged (%d contacts)", destination.name, number, total, len(batch))
    finally:
        http.close()
    return PushReport(destination.name, len(contacts), unchanged, sent, total, destination.requests_made(http), False,
                      None, held_out, refused)


def _apply_holdout(engine: sa.Engine, holdout: HoldoutConfig | None, destination: str,
                   pending: list[ContactTraits], *, record: bool) -> tuple[list[ContactTraits], int]:
    """The pending contacts that are treated, and how many were held out (exposures recorded)."""
    if holdout is None or not holdout.push or not pending:
        return pending, 0
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with engine.connect() as conn:
        groups = assign(conn, holdout, [c.contact_id for c in pending], now)
        if record:  # a dry run records nothing, not even the assignments (closed uncommitted: rolled back)
            record_exposures(conn, holdout, f"push:{destination}", [
                (c.contact_id, c.traits.get("intent_band"), groups[c.contact_id]) for c in pending], now)
            conn.commit()
    treated = [c for c in pending if not groups[c.contact_id]]
    return treated, len(pending) - len(treated)
