"""The Segment spec's calls as our rows: one mapping for a Segment export file
(:func:`propensity.features.sources.read_segment`) and the service.

``track`` -> an event: ``contact_id`` = ``userId`` (else ``anonymousId``), ``event_type`` =
``event``, ``ts`` = ``timestamp``, ``event_id`` = ``messageId``, ``properties`` = the properties
object, ``value`` = ``properties.value``, else ``revenue``, else ``amount``, ``account_id`` =
``context.groupId`` or ``groupId``. ``identify`` -> a contact: traits become attribute columns
(``createdAt`` -> ``created_at``), ``account_id`` = ``traits.company_id``, else the group. Other
call types (page, screen, group, alias) map to nothing.
"""

from __future__ import annotations

from typing import Any, Literal

from propensity.features.schema import READER_COLUMNS, ROW_NUMBER

__all__ = ["merge_identifies", "segment_row", "segment_shaped"]

_RESERVED_TRAITS = ("contact_id", "account_id", "created_at", *READER_COLUMNS)
_SEGMENT_CALLS = ("track", "identify", "page", "screen", "group", "alias")
_SEGMENT_FIELDS = ("userId", "anonymousId", "messageId", "event", "traits", "properties")


def segment_shaped(record: Any) -> bool:
    """Whether one JSON record has the shape of a Segment call (a ``type`` such as ``track``
    and a Segment field such as ``event`` or ``userId``): ids may be missing (that row is
    rejected later, naming the field), the shape is what tells the format."""
    return (
        isinstance(record, dict)
        and str(record.get("type", "")).lower() in _SEGMENT_CALLS
        and any(k in record for k in _SEGMENT_FIELDS)
    )


def _first(mapping: Any, *keys: str) -> Any:
    """First non-empty value among ``keys`` of a dict (None for anything else)."""
    if not isinstance(mapping, dict):
        return None
    for key in keys:
        value = mapping.get(key)
        if value is not None and value != "":
            return value
    return None


def merge_identifies(identifies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge identify calls per user: a later call's traits override, others are kept.

    Identify calls are partial updates in the Segment spec, so the last call alone would lose
    traits set earlier. Rows without a user id are passed on to be rejected by validation.
    """
    merged: dict[str, dict[str, Any]] = {}
    orphans = []
    for row in identifies:
        user = row["contact_id"]
        if user is None:
            orphans.append(row)
            continue
        current = merged.setdefault(str(user), {})
        current.update({k: v for k, v in row.items() if v is not None})
    return sorted([*merged.values(), *orphans], key=lambda r: r[ROW_NUMBER])


def segment_row(number: int, rec: dict[str, Any]) -> tuple[Literal["events", "contacts"], dict[str, Any]] | None:
    """One call as ``("events", row)`` (track) or ``("contacts", row)`` (identify); None for the others."""
    call = str(rec.get("type", "")).lower()
    user = _first(rec, "userId", "anonymousId")
    group = _first(rec.get("context"), "groupId") or _first(rec, "groupId")
    if call == "track":
        props = rec.get("properties")
        return "events", {
            ROW_NUMBER: number,
            "event_id": rec.get("messageId"),
            "contact_id": user,
            "event_type": rec.get("event"),
            "ts": _first(rec, "timestamp", "originalTimestamp"),
            "value": _first(props, "value", "revenue", "amount"),
            "account_id": group,
            "properties": props,
        }
    if call == "identify":
        traits = dict(rec.get("traits") or {})
        created = traits.pop("createdAt", None) or traits.pop("created_at", None)
        row = {
            ROW_NUMBER: number,
            "contact_id": user,
            "account_id": _first(traits, "company_id") or group,
            "created_at": created,
        }
        for key, value in traits.items():
            row[f"trait_{key}" if key in _RESERVED_TRAITS else key] = value
        return "contacts", row
    return None
