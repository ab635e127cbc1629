"""Segment HTTP API payloads -> canonical event rows and contact updates (pure).

The mapping is :func:`propensity.features.sources.read_segment`'s, so an event sent to the service lands
exactly as the same call in a Segment export file would: ``track`` -> an event
(``event_id`` = ``messageId``, ``contact_id`` = ``userId`` else ``anonymousId``,
``event_type`` = ``event``, ``value`` = ``properties.value`` / ``revenue`` / ``amount``,
``account_id`` = ``context.groupId`` / ``groupId``); ``identify`` -> a contact update (traits
are attributes, ``createdAt`` -> ``created_at``, ``traits.company_id`` -> ``account_id``); other
call types (page, screen, group, alias) are acknowledged and ignored, as the batch reader does.

Field checks follow :mod:`propensity.features.validate` (same missing-value tokens, epoch rules, time
range, finite values, properties a JSON object), written for one record in Python because
the service checks every request before acknowledging it and a DuckDB round trip per request
costs ~50 ms; ``tests/pipelines/serve/test_ingest.py`` checks both give the same rows. The
differences, all stricter at this edge: a call without a timestamp gets the time it was received,
as Segment does; ids (``userId``, ``anonymousId``, ``messageId``, group ids) must be a string or a
number of at most ``MAX_ID_CHARS`` characters without NUL (an object, a list or a boolean is no
id); ``event`` has no NUL; a boolean is no timestamp, and eight digits that form a date
(``20240601``) are that date.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from propensity.features.schema import ROW_NUMBER
from propensity.features.values import (
    EPOCH_MAX,
    EPOCH_MS_FROM,
    MISSING_ID,
    MISSING_TEXT,
    canonical_json,
    normalize_id,
)

__all__ = [
    "MAX_ID_CHARS",
    "ContactUpdate",
    "EventRow",
    "PayloadError",
    "parse_call",
    "parse_payload",
]

# the same tokens and limits as batch ingest (propensity.features.values)
_MISSING_TEXT, _MISSING_ID = MISSING_TEXT, MISSING_ID
_EPOCH_MS_FROM, _EPOCH_MAX = EPOCH_MS_FROM, EPOCH_MAX
_MIN_TS = datetime(1970, 1, 1)
_NUMERIC = re.compile(r"[+-]?[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?")
_SHOW_CHARS = 80
_RESERVED_TRAITS = ("contact_id", "account_id", "created_at", ROW_NUMBER)
_IGNORED_CALLS = ("page", "screen", "group", "alias")
# ids are bounded at the edge: the activation tables store contact ids as VARCHAR(256), and an id
# that only fails inside a commit would fail every request committed with it
MAX_ID_CHARS = 256
# a compact ISO 8601 date (20240601) is a date, not 20,240,601 epoch seconds (a day in 1970)
_COMPACT_DATE = re.compile(r"[12][0-9]{3}(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])")


class PayloadError(ValueError):
    """A call that cannot be stored; the message names the call and the field."""


@dataclass(frozen=True)
class EventRow:
    """One canonical event (``propensity.features.schema.EVENTS``) plus its parsed properties."""

    event_id: str
    contact_id: str
    event_type: str
    ts: datetime
    value: float
    account_id: str | None
    properties: str | None
    props: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    # the id is the row's hash (the call had no messageId): identical copies in one batch are numbered
    hashed: bool = field(default=False, compare=False, repr=False)


@dataclass(frozen=True)
class ContactUpdate:
    """A partial update of one contact: the traits given replace stored ones, others stay."""

    contact_id: str
    account_id: str | None
    created_at: datetime | None
    traits: dict[str, Any]


# --------------------------------------------------------------------------- one value


def _show(value: Any) -> str:
    return f"'{str(value)[:_SHOW_CHARS]}'"


def _missing(text: str, tokens: tuple[str, ...]) -> str | None:
    stripped = text.strip()
    return None if stripped.lower() in tokens else stripped


def parse_id(value: Any) -> str | None:
    """An id as text by :func:`propensity.features.validate.normalize_id` (trimmed, missing tokens
    -> None, integral floats and integral text without ``.0``), after the checks of this edge.

    Raises
    ------
    ValueError
        For a value that is no id: an object, a list or a boolean (JSON ``true`` is no one's id),
        text with a NUL character (PostgreSQL cannot store it), or more than ``MAX_ID_CHARS``.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected a string or a number, got a boolean ({str(value).lower()})")
    if isinstance(value, dict | list):
        raise ValueError(f"expected a string or a number, got {'an object' if isinstance(value, dict) else 'a list'}")
    text = normalize_id(value)  # batch ingestion's rule: 11391.0, "11391.0" -> "11391"
    if text is None:
        return None
    if "\x00" in text:
        raise ValueError("contains a NUL character")
    if len(text) > MAX_ID_CHARS:
        raise ValueError(f"is {len(text)} characters long, more than {MAX_ID_CHARS}")
    return text


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict | list):
        value = json.dumps(value)
    return _missing(str(value), _MISSING_TEXT)


def _epoch(number: float) -> datetime | None:
    if not math.isfinite(number) or abs(number) >= _EPOCH_MAX:
        return None
    # make_timestamp(microseconds): milliseconds * 1e3, seconds * 1e6
    micros = round(number * 1e3) if abs(number) >= _EPOCH_MS_FROM else round(number * 1e6)
    try:
        return datetime(1970, 1, 1) + timedelta(microseconds=micros)
    except OverflowError:  # far before year 1: refused as "before 1970" like in batch ingestion
        return datetime.min


def parse_timestamp(value: Any) -> datetime | None:
    """ISO 8601 (offset -> UTC; none means UTC), a date, or epoch seconds / milliseconds.

    Eight digits that form a valid date (``20240601``, text or number) are a compact ISO 8601
    date, not epoch seconds (which would be a day in 1970); a boolean is no timestamp.

    Returns None when the value cannot be parsed (the caller says which field).
    """
    if isinstance(value, bool):
        return None  # JSON true is no time (it was read as 1 second after the epoch)
    if isinstance(value, int) and _COMPACT_DATE.fullmatch(str(value)):
        value = str(value)  # 20240601 the number is the same date as "20240601"
    if isinstance(value, int | float):
        return _epoch(float(value))
    text = _text(value)
    if text is None:
        return None
    if _COMPACT_DATE.fullmatch(text):
        return datetime.strptime(text, "%Y%m%d") if _valid_compact(text) else None
    if _NUMERIC.fullmatch(text):
        return _epoch(float(text))
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(UTC).replace(tzinfo=None)
    return stamp


def _valid_compact(text: str) -> bool:
    try:
        datetime.strptime(text, "%Y%m%d")
    except ValueError:  # 20240231
        return False
    return True


def _value(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    text = _text(value)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"cannot parse {_show(value)} as a number") from None


def _first(mapping: Any, *keys: str) -> Any:
    if not isinstance(mapping, dict):
        return None
    for key in keys:
        found = mapping.get(key)
        if found is not None and found != "":
            return found
    return None


# --------------------------------------------------------------------------- one call


def _fail(where: str, name: str, detail: str) -> PayloadError:
    return PayloadError(f"{where}, field {name!r}: {detail}")


def _check_time(where: str, name: str, raw: Any, ts: datetime | None, now: datetime) -> datetime:
    if ts is None:
        raise _fail(where, name, f"cannot parse {_show(raw)} as a timestamp")
    if ts < _MIN_TS:
        raise _fail(where, name, f"timestamp {ts:%Y-%m-%d %H:%M:%S} is before 1970-01-01")
    if ts > now + timedelta(days=1):
        raise _fail(
            where, name,
            f"timestamp {ts:%Y-%m-%d %H:%M:%S} is more than 1 day after now ({now:%Y-%m-%d %H:%M:%S} UTC)",
        )
    return ts


def _id(where: str, name: str, value: Any) -> str | None:
    try:
        return parse_id(value)
    except ValueError as exc:
        raise _fail(where, name, str(exc)) from None


def _contact_id(call: Mapping[str, Any], where: str) -> str:
    name = "userId" if _first(call, "userId") is not None else "anonymousId"
    contact = _id(where, name, _first(call, "userId", "anonymousId"))
    if contact is None:
        raise _fail(where, "userId", "is empty (give userId or anonymousId)")
    return contact


def _event_hash(contact: str, event_type: str, ts: datetime, value: float, properties: str | None) -> str:
    # propensity.features.validate's fallback key: md5 of the row, so a resend without messageId dedupes
    # (properties through the same canonical_json, so key order does not change the id)
    canonical = "" if properties is None else canonical_json(properties)
    parts = [contact, event_type, ts.strftime("%Y-%m-%dT%H:%M:%S.%f"), repr(value), canonical]
    return hashlib.md5("|".join(parts).encode("utf-8")).hexdigest()


def _track(call: Mapping[str, Any], where: str, received_at: datetime, now: datetime) -> EventRow:
    contact = _contact_id(call, where)
    event_type = _text(call.get("event"))
    if event_type is None:
        raise _fail(where, "event", "is empty")
    if "\x00" in event_type:
        raise _fail(where, "event", "contains a NUL character")
    raw_ts = _first(call, "timestamp", "originalTimestamp")
    ts = received_at if raw_ts is None else _check_time(where, "timestamp", raw_ts, parse_timestamp(raw_ts), now)
    props = call.get("properties")
    if props is not None and not isinstance(props, dict):
        raise _fail(where, "properties", f"expected a JSON object, got {type(props).__name__}")
    raw_value = _first(props, "value", "revenue", "amount")
    try:
        value = _value(raw_value)
    except ValueError as exc:
        raise _fail(where, "properties.value", str(exc)) from None
    if value is None:
        value = 1.0
    elif not math.isfinite(value):
        raise _fail(where, "properties.value", f"{_show(raw_value)} is not a finite number")
    properties = json.dumps(props) if props is not None else None
    group_field = "context.groupId" if _first(call.get("context"), "groupId") is not None else "groupId"
    group = _id(where, group_field, _first(call.get("context"), "groupId") or _first(call, "groupId"))
    event_id = _id(where, "messageId", call.get("messageId"))
    if event_id is not None:
        return EventRow(event_id, contact, event_type, ts, value, group, properties, props)
    return EventRow(_event_hash(contact, event_type, ts, value, properties), contact, event_type, ts, value,
                    group, properties, props, hashed=True)


def _identify(call: Mapping[str, Any], where: str, now: datetime) -> ContactUpdate:
    contact = _contact_id(call, where)
    traits = call.get("traits")
    if traits is None:
        traits = {}
    if not isinstance(traits, dict):
        raise _fail(where, "traits", f"expected a JSON object, got {type(traits).__name__}")
    traits = dict(traits)
    raw_created = traits.pop("createdAt", None) or traits.pop("created_at", None)
    created = None
    if raw_created is not None:
        created = _check_time(where, "traits.createdAt", raw_created, parse_timestamp(raw_created), now)
    group = _id(where, "traits.company_id",
                _first(traits, "company_id") or _first(call.get("context"), "groupId") or _first(call, "groupId"))
    kept = {f"trait_{k}" if k in _RESERVED_TRAITS else k: v for k, v in traits.items() if v is not None}
    return ContactUpdate(contact, group, created, kept)


def parse_call(
    call: Any, *, where: str, received_at: datetime, now: datetime, kind: str | None = None
) -> EventRow | ContactUpdate | None:
    """One Segment call -> an event, a contact update, or None (a call type that is ignored).

    Parameters
    ----------
    call : dict
        The JSON object of one call.
    where : str
        How messages name the call (``"batch[3]"``, ``"track"``).
    received_at, now : datetime
        Naive UTC: the time of a call without a timestamp, and the reference for "not in the
        future" (more than 1 day ahead is refused, as in batch ingestion).
    kind : str, optional
        The call type the endpoint implies (``/v1/track``); without it (a batch), the call's
        ``type``.

    Raises
    ------
    PayloadError
        When a field fails a check; the message names ``where`` and the field.
    """
    if not isinstance(call, dict):
        raise PayloadError(f"{where}: expected a JSON object, got {type(call).__name__}")
    call_type = (kind or str(call.get("type") or "")).lower()
    if call_type == "track":
        return _track(call, where, received_at, now)
    if call_type == "identify":
        return _identify(call, where, now)
    if call_type in _IGNORED_CALLS:
        return None
    raise _fail(where, "type", f"unknown call type {_show(call_type)}: expected track, identify, "
                f"page, screen, group or alias")


def parse_payload(
    body: Any, kind: str, *, received_at: datetime, now: datetime
) -> list[EventRow | ContactUpdate]:
    """A request body for ``/v1/{kind}`` -> the rows to store (all or nothing).

    ``kind`` is ``track``, ``identify`` or ``batch`` (``{"batch": [call, ...]}``).
    """
    if not isinstance(body, dict):
        raise PayloadError(f"body: expected a JSON object, got {type(body).__name__}")
    if kind == "batch":
        calls = body.get("batch")
        if not isinstance(calls, list):
            raise PayloadError("body, field 'batch': expected a list of calls")
        parsed = [
            parse_call(c, where=f"batch[{i}]", received_at=received_at, now=now) for i, c in enumerate(calls)
        ]
        parsed = number_identical_calls(parsed)
    else:
        parsed = [parse_call(body, where=kind, received_at=received_at, now=now, kind=kind)]
    return [p for p in parsed if p is not None]


def number_identical_calls(rows: list[EventRow | ContactUpdate | None]) -> list[EventRow | ContactUpdate | None]:
    """The n-th identical call without ``messageId`` in one batch (n >= 2) gets ``md5(hash|n)``.

    Batch ingest's rule for identical rows of one source (:mod:`propensity.features.validate`),
    with a batch request as the source: two identical calls in one request cannot be a retry of
    each other (a client retries the whole request), so they are two events (two same-second
    purchases of one item); resending the same batch numbers its copies the same way, so the
    retry adds nothing. Identical calls in two requests without ``messageId`` stay one event:
    the service cannot tell the second from a retry of the first.
    """
    seen: dict[str, int] = {}
    out = []
    for row in rows:
        if isinstance(row, EventRow) and row.hashed:
            n = seen[row.event_id] = seen.get(row.event_id, 0) + 1
            if n > 1:
                row = replace(row, event_id=hashlib.md5(f"{row.event_id}|{n}".encode()).hexdigest())
        out.append(row)
    return out
