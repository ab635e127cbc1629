"""Send a workspace's history to a running service, so its scores start from it.

The service scores only the events it has received. A team that starts it on a workspace built
from batch files would read every contact as cold until new events arrive; `propensity
backfill` replays the workspace's contacts (as Segment ``identify`` calls) and events (as
``track`` calls, oldest first) through ``POST /v1/batch`` — the service's own validation, dedupe
and scoring, so nothing is written around it. Each event's ``event_id`` is its ``messageId``, so
a backfill that is cut short and run again stores nothing twice.

The calls are Segment's shape (what any SDK sends), built here from the canonical tables: no
library builds Segment batches from a DataFrame.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

__all__ = ["BackfillReport", "backfill", "contact_calls", "event_calls", "request_batches"]

# below the service's default max_body_bytes (512 KB, Segment's own batch limit)
MAX_REQUEST_BYTES = 400_000
_KEYS = ("contact_id", "account_id", "created_at")


@dataclass
class BackfillReport:
    contacts: int = 0
    events: int = 0
    requests: int = 0
    stored: int = 0
    duplicates: int = 0

    def summary(self) -> str:
        return (f"{self.contacts:,} contacts and {self.events:,} events sent in {self.requests:,} request(s): "
                f"{self.stored:,} events stored, {self.duplicates:,} already there")


def _iso(ts) -> str:
    return pd.Timestamp(ts).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # stored UTC, naive


def _plain(value):
    """A JSON-ready scalar: numpy/pandas scalars unwrapped, missing values dropped by the caller."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, pd.Timestamp | datetime):
        return _iso(value)
    return value


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT


def contact_calls(contacts: pd.DataFrame) -> Iterator[dict]:
    """``identify`` calls: the attributes as traits, ``created_at`` as ``createdAt``, the account as
    ``company_id`` (what the service reads them from)."""
    attributes = [c for c in contacts.columns if c not in _KEYS]
    for row in contacts.itertuples(index=False):
        record = row._asdict()
        traits = {name: _plain(record[name]) for name in attributes if not _missing(record[name])}
        if not _missing(record.get("created_at")):
            traits["createdAt"] = _iso(record["created_at"])
        if not _missing(record.get("account_id")):
            traits["company_id"] = str(record["account_id"])
        yield {"type": "identify", "userId": str(record["contact_id"]), "traits": traits}


def event_calls(events: pd.DataFrame) -> Iterator[dict]:
    """``track`` calls in the frame's order: ``messageId`` = ``event_id`` (a rerun stores nothing
    twice), the value as ``properties.value`` beside the stored properties, the account as ``groupId``."""
    for row in events.itertuples(index=False):
        properties = {}
        if not _missing(getattr(row, "properties", None)):
            properties = json.loads(row.properties)
        properties["value"] = float(row.value)
        call = {"type": "track", "messageId": str(row.event_id), "userId": str(row.contact_id),
                "event": str(row.event_type), "timestamp": _iso(row.ts), "properties": properties}
        if not _missing(getattr(row, "account_id", None)):
            call["context"] = {"groupId": str(row.account_id)}
        yield call


def request_batches(calls: Iterable[dict], max_calls: int, max_bytes: int = MAX_REQUEST_BYTES) -> Iterator[list[dict]]:
    """Group calls into ``/v1/batch`` bodies of at most ``max_calls`` calls and ``max_bytes`` bytes."""
    batch: list[dict] = []
    size = 0
    for call in calls:
        length = len(json.dumps(call)) + 1
        if batch and (len(batch) >= max_calls or size + length > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(call)
        size += length
    if batch:
        yield batch


def backfill(contacts: pd.DataFrame | None, events: Iterable[pd.DataFrame], url: str, write_key: str, *,
             batch_size: int = 500, attempts: int = 6, client=None,
             progress: Callable[[BackfillReport], None] = lambda _: None) -> BackfillReport:
    """POST the contacts, then the events (chunks of frames, oldest first), to ``url``'s
    ``/v1/batch``; transient failures (a refused connection, 429, 5xx) are retried with backoff, a
    4xx answer stops with its reason."""
    import httpx
    from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

    from propensity.pipelines.redaction import redact

    def transient(exc: BaseException) -> bool:
        if isinstance(exc, httpx.TransportError):
            return True
        return isinstance(exc, httpx.HTTPStatusError) and (exc.response.status_code == 429
                                                           or exc.response.status_code >= 500)

    own = client is None
    client = client or httpx.Client(timeout=120)
    report = BackfillReport()

    @retry(retry=retry_if_exception(transient), wait=wait_exponential(multiplier=0.5, max=20),
           stop=stop_after_attempt(attempts), reraise=True)
    def send(batch: list[dict]) -> dict:
        answer = client.post(f"{url.rstrip('/')}/v1/batch", json={"batch": batch}, auth=(write_key, ""))
        answer.raise_for_status()
        return answer.json()

    try:
        sources = [("contacts", contact_calls(contacts) if contacts is not None else iter(())),
                   ("events", (call for chunk in events for call in event_calls(chunk)))]
        for kind, calls in sources:
            for batch in request_batches(calls, batch_size):
                try:
                    answer = send(batch)
                except httpx.HTTPStatusError as exc:
                    raise RuntimeError(f"the service refused a batch of {kind} ({exc.response.status_code}): "
                                       f"{redact(exc.response.text, [write_key], limit=300)}") from None
                except httpx.TransportError as exc:
                    raise RuntimeError(f"cannot reach the service at {redact(url)}: {exc}") from None
                report.requests += 1
                if kind == "contacts":
                    report.contacts += len(batch)
                else:
                    report.events += len(batch)
                    report.stored += int(answer.get("stored", 0))
                    report.duplicates += int(answer.get("duplicates", 0))
                progress(report)
    finally:
        if own:
            client.close()
    return report
