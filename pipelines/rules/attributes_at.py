"""Which attribute values the rule score's fit criteria read: those valid at each row's cut-off.

A fit criterion (``attribute: plan, equals: enterprise``) scored at a past cut-off with today's
contacts would see values from after it: the rule baseline of ``train``, ``compare``, the backtests
and ``monitor`` would be scored with the future, and the rule-vs-learned comparison would not be
honest. With the workspace's attribute history (``features/history.py``) every place that scores
rules for a cut-off reads, per ``(contact_id, as_of)`` row, the version valid at that ``as_of``,
through the same as-of lookup the feature build uses (:func:`features.history.contacts_at_rows`).
Without a history (a workspace ingested before it, Spark and warehouse engines) the latest values
are read, and :func:`rule_values_note` says so.
"""

from __future__ import annotations

import ibis
import pandas as pd

from propensity.features.history import contacts_at_rows
from propensity.pipelines.rules.config import RuleSet

__all__ = ["rule_contacts", "rule_values_note"]


def rule_contacts(contacts: pd.DataFrame | None, history: ibis.Table | None, rows: ibis.Table) -> pd.DataFrame | None:
    """The contacts a rule score of ``rows`` (``contact_id, as_of``) reads: with ``history`` one row per
    ``(contact_id, as_of)`` with every contacts column as it was then (``fit_points`` matches it by both
    keys); without, ``contacts`` as they are (the latest values)."""
    if contacts is None or history is None:
        return contacts
    frame = contacts_at_rows(history, rows)
    # no version for any row's contact: nor has the contacts table one (the history holds every contact)
    return contacts if frame.empty else frame


def rule_values_note(rules: RuleSet, history: ibis.Table | None, *, engine: bool = False) -> str | None:
    """Which attribute values the rules' fit criteria read, in one line (None without fit criteria).

    ``engine``: scored on another engine (Spark, a warehouse), which keeps no attribute history."""
    if not rules.fit:
        return None
    if history is not None:
        return "rule fit points: attribute values as they were at each row's as_of, from the workspace's attribute history"
    reason = ("no attribute history on this engine; a workspace's DuckDB keeps one from its contacts ingests"
              if engine else "the workspace keeps no attribute history yet: ingest contacts to start one")
    return f"rule fit points: the contacts' latest attribute values ({reason})"
