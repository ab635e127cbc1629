"""Pure: scores as traits -> the records a CRM receives (contacts, and accounts rolled up).

A record is a :class:`ContactTraits` whose ``traits`` are the CRM's own field names and values
exactly as sent, so the push state's fingerprint ("changed since the last push?") covers what the
CRM holds. Values are strings for HubSpot (its API stores every property as text) and typed for
Salesforce; the caller passes the formatter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from propensity.pipelines.activation.traits import ContactTraits, fingerprint

__all__ = ["AccountScore", "CRMRecords", "account_scores", "crm_records", "match_keys"]

# the CRM fields, by what they hold (the names get the configured prefix)
CONTACT_FIELDS = ("score", "band", "probability", "top_reasons", "change_reason", "contact_id")
ACCOUNT_FIELDS = ("score", "band", "contacts_scored", "top_contact_id", "account_id")


@dataclass(frozen=True)
class CRMRecords:
    """What a push sends: the records, and the scored contacts left out with the reason."""

    records: list[ContactTraits]
    skipped: dict[str, str]  # contact_id (or account_id) -> why it is not sent


@dataclass(frozen=True)
class AccountScore:
    account_id: str
    score: float  # the best contact's score (0-5)
    band: str | None  # that contact's band
    contacts_scored: int
    top_contact_id: str


def _record(key: str, fields: Mapping[str, object], value: Callable[[object], object]) -> ContactTraits:
    """An empty field is left out (not sent as empty: that would erase what the CRM holds)."""
    fields = {k: value(v) for k, v in fields.items() if v is not None}
    return ContactTraits(key, fields, fingerprint(fields))


def crm_records(contacts: Sequence[ContactTraits], name: Callable[[str], str],
                value: Callable[[object], object], reasons_separator: str = "; ") -> list[ContactTraits]:
    """One record per scored contact: score, band, probability, top reasons and our contact_id."""
    out = []
    for c in contacts:
        t = c.traits
        reasons = t.get("top_reasons")
        out.append(_record(c.contact_id, {
            name("score"): t["intent_score"], name("band"): t.get("intent_band"),
            name("probability"): t.get("propensity"),
            name("top_reasons"): reasons_separator.join(reasons) if reasons else None,
            name("change_reason"): t.get("score_change_reason"),  # why the score last moved
            name("contact_id"): c.contact_id}, value))
    return out


def account_scores(contacts: Sequence[ContactTraits], accounts: Mapping[str, str]) -> list[AccountScore]:
    """Roll contacts up to their accounts: the best contact's score and band, and how many were scored.

    ``accounts`` is ``contact_id -> account_id``; contacts without one are left out. The best
    contact is the highest score (ties: the smaller contact_id), as ``rules.rollup`` "max" does.
    """
    ranked = sorted((c for c in contacts if accounts.get(c.contact_id)),
                    key=lambda c: (-float(c.traits["intent_score"]), c.contact_id))
    best: dict[str, ContactTraits] = {}
    counts: dict[str, int] = {}
    for c in ranked:
        account = accounts[c.contact_id]
        best.setdefault(account, c)
        counts[account] = counts.get(account, 0) + 1
    return [AccountScore(a, float(best[a].traits["intent_score"]), best[a].traits.get("intent_band"), counts[a],
                         best[a].contact_id) for a in sorted(best)]


def account_records(scores: Sequence[AccountScore], name: Callable[[str], str],
                    value: Callable[[object], object]) -> list[ContactTraits]:
    return [_record(a.account_id, {
        name("score"): round(a.score, 2), name("band"): a.band, name("contacts_scored"): a.contacts_scored,
        name("top_contact_id"): a.top_contact_id, name("account_id"): a.account_id}, value) for a in scores]


def match_keys(contacts_table: pd.DataFrame, column: str, scored: Sequence[str], source: str) -> dict[str, str]:
    """``contact_id -> value of column`` for the scored contacts that have one; raises when the column is absent."""
    if column not in contacts_table.columns:
        raise ValueError(f"{source}: the contacts table has no column {column!r} to match CRM records on "
                         f"(columns: {', '.join(map(str, contacts_table.columns))})")
    values = contacts_table.drop_duplicates("contact_id", keep="last").set_index("contact_id")[column]
    wanted = set(scored)
    return {str(k): str(v).strip() for k, v in values.items()
            if str(k) in wanted and v is not None and not pd.isna(v) and str(v).strip()}
