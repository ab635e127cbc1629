"""Rules that read nothing: activities whose event (or property filter) matches no event in the data.

Such a rule scores 0 for everyone without a word; a case typo (``pricing viewed`` for
``Pricing Viewed``) is enough. One aggregate pass over the events counts, per activity, the events
of its type and the events its filter matches; a rule at zero is reported with the closest event
names the data has (``difflib``, on case-folded names, since case is the usual slip).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import ibis

from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.rules.score import activity_matches

__all__ = ["UnreadRule", "unread_rules"]


@dataclass(frozen=True)
class UnreadRule:
    """One activity that matches no event, and what the data has instead."""

    rule: str
    event: str
    events_of_type: int  # events of the rule's type (> 0 when only the property filter matches none)
    closest: tuple[tuple[str, int], ...]  # (event type, events) most like the rule's event

    def message(self, rules_name: str) -> str:
        if self.events_of_type:
            return (f"rule {self.rule!r} of {rules_name!r} matches no event: {self.events_of_type:,} "
                    f"{self.event!r} events, none passes its `where` filter; it scores 0 for everyone")
        hint = ", ".join(f"{name!r} ({count:,})" for name, count in self.closest) or "none close"
        return (f"rule {self.rule!r} of {rules_name!r} reads event {self.event!r}, which no event has "
                f"(closest in the data: {hint}); it scores 0 for everyone")


def _closest(event: str, counts: dict[str, int], n: int = 3) -> tuple[tuple[str, int], ...]:
    by_folded: dict[str, list[str]] = {}
    for name in counts:
        by_folded.setdefault(name.casefold(), []).append(name)
    folded = difflib.get_close_matches(event.casefold(), list(by_folded), n=n, cutoff=0.5)
    names = [name for key in folded for name in by_folded[key]][:n]
    return tuple((name, counts[name]) for name in names)


def unread_rules(events: ibis.Table, rules: RuleSet) -> list[UnreadRule]:
    """Every activity of ``rules`` that matches no event of ``events`` (all time, any contact)."""
    if not rules.activities:
        return []
    metrics = {}
    for i, activity in enumerate(rules.activities):
        metrics[f"type_{i}"] = (events.event_type == activity.event).sum()
        metrics[f"match_{i}"] = activity_matches(activity, events).sum()
    row = events.aggregate(**metrics).execute().iloc[0]
    unread = [(i, a) for i, a in enumerate(rules.activities) if not int(row[f"match_{i}"] or 0)]
    if not unread:
        return []
    frame = events.group_by("event_type").aggregate(n=events.count()).execute()
    counts = {str(t): int(n) for t, n in zip(frame["event_type"], frame["n"], strict=True)}
    return [UnreadRule(rule=a.name, event=a.event, events_of_type=int(row[f"type_{i}"] or 0),
                       closest=() if int(row[f"type_{i}"] or 0) else _closest(a.event, counts))
            for i, a in unread]
