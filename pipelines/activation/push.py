"""``propensity push``: scores as traits to Customer.io, Segment-spec endpoints or a signed webhook.

This module is the push itself (changed-only state, batches, previews, the holdout);
the traits are :mod:`.traits`', the destinations :mod:`.destinations`'.

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
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

# the traits and the destinations have their own modules; their names stay importable from here
from propensity.pipelines.activation.destinations import (  # noqa: F401
    DESTINATIONS,
    CustomerIOTrack,
    Destination,
    HttpClient,
    PushOptions,
    SegmentBatch,
    SignedWebhook,
    destination_from_env,
)
from propensity.pipelines.activation.holdout import (
    HoldoutConfig,
    assign,
    record_exposures,
)
from propensity.pipelines.activation.pacing import TokenBucket
from propensity.pipelines.activation.retrying import DeliveryFailure as _HTTPFailure
from propensity.pipelines.activation.score_files import read_scores, read_scores_table
from propensity.pipelines.activation.tables import (
    create_activation_tables,
    push_state,
    upsert,
)
from propensity.pipelines.activation.traits import (  # noqa: F401
    ContactTraits,
    change_reason_text,
    fingerprint,
    message_id,
    traits_from_scores,
)

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


class PushError(RuntimeError):
    """A push that could not finish; the message says what was acknowledged before it stopped."""


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
    http = HttpClient(options, destination.secrets, TokenBucket(options.rate, options.burst, sleep=sleep), sleep=sleep)
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
