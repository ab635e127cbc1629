"""Which contacts columns become model features: the attribute guard.

Every contacts column but the keys used to become a feature as it was. Some of them are not
attributes of a buyer but handles on one (an email, a CRM record id, a name, free-text notes) or
bookkeeping of the CRM (``salesforce_object``: a lead becomes a Contact *when it converts*, so
the object type reads the outcome). A model given those learns who a contact is, or what
happened to it, instead of how it behaves: it scores well on the training data and answers a
different question on the next cut-off.

So by default (``attributes.columns: auto`` in the feature config) a column is dropped when

- its name says it identifies a contact or a CRM record (:data:`IDENTIFIER_WORDS`), or
- it is text or an integer and (near) unique per contact: at least ``NEAR_UNIQUE_SHARE`` of its
  non-NULL values distinct, over at least ``MIN_ROWS_FOR_SHARE`` contacts (fewer rows cannot tell an
  identifier from a small table), or
- it is text with more than ``MAX_CATEGORIES`` distinct values, or text with a mean length above
  ``FREE_TEXT_LENGTH`` characters (free text, not a category).

A DOUBLE column is a measurement (revenue, a score), never an identifier: only its name can drop
it. ``attributes.include`` keeps a column whatever the guard says, ``attributes.exclude`` drops one
whatever it says. :func:`choose_attributes` is pure (column statistics in, a choice out);
:func:`measure_columns` is its one query; the choice is recorded in the resolved feature config
(``attributes.columns`` as a list), so scoring and the service read exactly the trained columns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import ibis

from propensity.features.config import FeatureConfig

__all__ = [
    "IDENTIFIER_WORDS",
    "AttributeChoice",
    "ColumnStats",
    "attribute_columns",
    "choose_attributes",
    "measure_columns",
    "resolve_attributes",
]

# Columns of the contacts table that are keys or bookkeeping, never attributes.
NON_ATTRIBUTES = ("contact_id", "created_at", "account_id", "updated_at")
# A name holding one of these words (split at `_`, case changes and digits) names a handle on a
# contact or a CRM record, not a trait of it. "object"/"record type": a CRM's object type.
IDENTIFIER_WORDS: Mapping[str, str] = {
    "email": "an email address", "emails": "an email address", "mail": "an email address",
    "phone": "a phone number", "mobile": "a phone number", "fax": "a phone number", "telephone": "a phone number",
    "name": "a name", "firstname": "a name", "lastname": "a name", "fullname": "a name", "surname": "a name",
    "username": "a name",
    "id": "an identifier", "ids": "an identifier", "uuid": "an identifier", "guid": "an identifier",
    "salesforce": "a CRM field", "sfdc": "a CRM field", "hubspot": "a CRM field", "crm": "a CRM field",
    "object": "a CRM object type", "recordtype": "a CRM object type",
    "url": "a link", "website": "a link", "linkedin": "a link", "twitter": "a link",
    "address": "an address", "street": "an address", "ip": "an address",
    "notes": "free text", "note": "free text", "description": "free text", "comment": "free text",
    "comments": "free text", "message": "free text", "bio": "free text",
}
NEAR_UNIQUE_SHARE = 0.9
MIN_ROWS_FOR_SHARE = 50
MAX_CATEGORIES = 1000
FREE_TEXT_LENGTH = 40.0


@dataclass(frozen=True)
class ColumnStats:
    """What the guard needs to know of one contacts column (from :func:`measure_columns`)."""

    kind: str  # "text", "integer", "float", "boolean" or "other"
    non_null: int
    distinct: int
    mean_length: float | None = None  # text only


@dataclass(frozen=True)
class AttributeChoice:
    """The attribute columns a build uses, and why each other column is not one of them."""

    kept: tuple[str, ...]
    dropped: dict[str, str] = field(default_factory=dict)  # column -> reason
    included: tuple[str, ...] = ()  # kept by attributes.include although the guard would drop them
    excluded: tuple[str, ...] = ()  # dropped by attributes.exclude

    def note(self) -> str | None:
        """One line for the command's output and the MLflow run; None when nothing was dropped or forced."""
        parts = []
        if self.dropped:
            listed = "; ".join(f"{c} ({why})" for c, why in self.dropped.items())
            parts.append(f"contacts columns not used as features, they look like identifiers: {listed} "
                         "(keep one with `attributes: {include: [...]}` in the feature config)")
        if self.included:
            parts.append(f"kept by attributes.include although they look like identifiers: {list(self.included)}")
        if self.excluded:
            parts.append(f"left out by attributes.exclude: {list(self.excluded)}")
        return "; ".join(parts) or None


def _words(column: str) -> list[str]:
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", column)
    words = [w for w in re.split(r"[^0-9A-Za-z]+|(?<=[A-Za-z])(?=[0-9])|(?<=[0-9])(?=[A-Za-z])", text) if w]
    lower = [w.lower() for w in words]
    # "first_name", "record_type": pairs that are one word in IDENTIFIER_WORDS
    return lower + [a + b for a, b in pairwise(lower)]


def identifier_reason(column: str, stats: ColumnStats | None) -> str | None:
    """Why ``column`` looks like an identifier (the reason, in a few words), or None."""
    for word in _words(column):
        if word in IDENTIFIER_WORDS:
            return f"name: {IDENTIFIER_WORDS[word]}"
    if stats is None or stats.kind not in ("text", "integer"):
        return None
    if stats.non_null >= MIN_ROWS_FOR_SHARE and stats.distinct >= NEAR_UNIQUE_SHARE * stats.non_null:
        return f"{stats.distinct:,} distinct values over {stats.non_null:,} contacts"
    if stats.kind == "text" and stats.distinct > MAX_CATEGORIES:
        return f"{stats.distinct:,} distinct values (more than {MAX_CATEGORIES:,} categories)"
    if stats.kind == "text" and stats.mean_length is not None and stats.mean_length > FREE_TEXT_LENGTH:
        return f"free text (mean length {stats.mean_length:.0f} characters)"
    return None


def choose_attributes(columns: Sequence[str], stats: Mapping[str, ColumnStats], config: FeatureConfig) -> AttributeChoice:
    """The attribute columns of ``config`` among the contacts table's ``columns`` (pure).

    Raises
    ------
    ValueError
        When ``attributes.include`` or ``exclude`` names a column the table does not have (a typo
        there would silently keep an identifier or drop an attribute).
    """
    selection = config.attributes
    candidates = [c for c in columns if c not in NON_ATTRIBUTES]
    # a resolved list is checked alone: include/exclude did their work when it was chosen
    named = set(selection.columns) if isinstance(selection.columns, tuple) else {*selection.include, *selection.exclude}
    missing = sorted(named - set(candidates))
    if missing:
        raise ValueError(f"the feature config's `attributes` names columns the contacts table does not have: "
                         f"{missing}; its attribute columns: {candidates}")
    if not config.include_attributes:
        return AttributeChoice(kept=())
    excluded = tuple(c for c in candidates if c in selection.exclude)
    if isinstance(selection.columns, tuple):
        return AttributeChoice(kept=tuple(c for c in candidates if c in selection.columns), excluded=excluded)
    if selection.columns == "all":
        return AttributeChoice(kept=tuple(c for c in candidates if c not in selection.exclude), excluded=excluded)
    kept, dropped, included = [], {}, []
    for column in candidates:
        if column in selection.exclude:
            continue
        reason = identifier_reason(column, stats.get(column))
        if reason is None or column in selection.include:
            kept.append(column)
            if reason is not None:
                included.append(column)
        else:
            dropped[column] = reason
    return AttributeChoice(kept=tuple(kept), dropped=dropped, included=tuple(included), excluded=excluded)


def _kind(dtype) -> str:
    if dtype.is_string():
        return "text"
    if dtype.is_integer():
        return "integer"
    if dtype.is_floating() or dtype.is_decimal():
        return "float"
    return "boolean" if dtype.is_boolean() else "other"


def measure_columns(contacts: ibis.Table, columns: Sequence[str]) -> dict[str, ColumnStats]:
    """Non-NULL count, distinct count (and mean length of text) of each column, in one query."""
    kinds = {c: _kind(contacts[c].type()) for c in columns}
    aggs = {}
    for i, column in enumerate(columns):
        value = contacts[column]
        aggs[f"n{i}"] = value.count()
        aggs[f"d{i}"] = value.nunique()
        if kinds[column] == "text":
            aggs[f"l{i}"] = value.length().cast("float64").mean()
    if not aggs:
        return {}
    row = contacts.aggregate(**aggs).execute().iloc[0]
    out = {}
    for i, column in enumerate(columns):
        length = row.get(f"l{i}")
        out[column] = ColumnStats(kind=kinds[column], non_null=int(row[f"n{i}"]), distinct=int(row[f"d{i}"]),
                                  mean_length=None if length is None or math.isnan(length) else float(length))
    return out


def resolve_attributes(config: FeatureConfig, contacts: ibis.Table | None) -> tuple[FeatureConfig, AttributeChoice]:
    """``config`` with ``attributes.columns`` set to the columns chosen (one small query when ``auto``).

    A trained model records that list, so a later contacts table with new columns (or other
    counts) does not change what it reads.
    """
    if contacts is None:
        choice = AttributeChoice(kept=())
    else:
        candidates = [c for c in contacts.columns if c not in NON_ATTRIBUTES]
        auto = config.include_attributes and config.attributes.columns == "auto"
        stats = measure_columns(contacts, candidates) if auto else {}
        choice = choose_attributes(list(contacts.columns), stats, config)
    selection = config.attributes.model_copy(update={"columns": choice.kept})
    return config.model_copy(update={"attributes": selection}), choice


def attribute_columns(contacts: ibis.Table | None, config: FeatureConfig) -> list[str]:
    """The attribute columns a feature build joins (resolving ``auto`` with one query when needed)."""
    if contacts is None or not config.include_attributes:
        return []
    if config.attributes.columns == "auto":
        _, choice = resolve_attributes(config, contacts)
        return list(choice.kept)
    return list(choose_attributes(list(contacts.columns), {}, config).kept)
