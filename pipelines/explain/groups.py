"""Feature groups a sales rep understands, and the facts behind each group in words.

A learned model has a hundred-odd columns (``demo_requested__count_7d``,
``demo_requested__decayed_30d``, ...); a rep thinks in activities and attributes. Columns are
grouped by the name the feature build gives them (docs/ARCHITECTURE.md, "Feature names"):

* ``{event}__*``: one group per event type (kind ``event``);
* ``account__*``: one group ``account`` (kind ``account``);
* ``all__*`` and ``value__*``: one group ``all_activity`` (kind ``activity``);
* ``tenure_days``: one group ``tenure`` (kind ``activity``);
* ``rule__{activity}`` (the hand rules as an input, training/rule_inputs.py): the group of the
  event type the activity reads; ``rule__attribute__{name}``: the attribute's group;
* anything else is a contact attribute: one group per attribute (kind ``fit``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from propensity.features.build import safe_name

__all__ = ["FeatureGroups", "describe_group", "group_features", "rule_column_groups"]

ACCOUNT, ACTIVITY, TENURE = "account", "all_activity", "tenure"
_WINDOW = re.compile(r"__count_(\d+)d$")


@dataclass(frozen=True)
class FeatureGroups:
    """Which group each model feature belongs to.

    Attributes
    ----------
    of_feature : dict of str to str
        Feature name -> group name.
    kinds : dict of str to str
        Group name -> ``event``, ``fit``, ``account`` or ``activity``.
    order : tuple of str
        Groups in the order their first feature appears in the model.
    """

    of_feature: dict[str, str]
    kinds: dict[str, str]
    order: tuple[str, ...]

    def features_of(self, group: str) -> list[str]:
        """The model features of ``group``, in model order."""
        return [f for f, g in self.of_feature.items() if g == group]


def rule_column_groups(rules) -> dict[str, tuple[str, str]]:
    """``rule__*`` column -> (group, kind): an activity's column joins its event type's group, a fit
    criterion's attribute column the attribute's group (so the rules' share is not a bucket of its own)."""
    if rules is None:
        return {}
    out = {f"rule__{a.name}": (safe_name(a.event), "event") for a in rules.activities}
    out |= {f"rule__attribute__{c.attribute}": (c.attribute, "fit") for c in rules.fit}
    return out


def group_features(feature_names: Sequence[str], event_types: Sequence[str], rules=None) -> FeatureGroups:
    """Group a model's features (see the module docstring).

    Parameters
    ----------
    feature_names : sequence of str
        The model's features, in model order.
    event_types : sequence of str
        The event types the features were built for (raw names; their safe names prefix the
        per-type features).
    rules : RuleSet, optional
        The rules whose columns the model reads (``LearnedScorer.input_rules``).
    """
    events = {safe_name(e) for e in event_types}
    rule_columns = rule_column_groups(rules)
    of_feature: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for name in feature_names:
        prefix, sep, _ = name.partition("__")
        if name in rule_columns:
            group, kind = rule_columns[name]
        elif sep and prefix in events:
            group, kind = prefix, "event"
        elif sep and prefix == "account":
            group, kind = ACCOUNT, "account"
        elif sep and prefix in {"all", "value"}:
            group, kind = ACTIVITY, "activity"
        elif name == "tenure_days":
            group, kind = TENURE, "activity"
        else:
            group, kind = name, "fit"
        of_feature[name] = group
        kinds.setdefault(group, kind)
    return FeatureGroups(of_feature=of_feature, kinds=kinds, order=tuple(dict.fromkeys(of_feature.values())))


def _number(value: object) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _days(value: float) -> str:
    if value < 1:
        return "today" if value < 1 / 24 else f"{value * 24:.0f} hours ago"
    return f"{value:.0f} day{'s' if round(value) != 1 else ''} ago"


def _counts(row: pd.Series, prefix: str) -> list[tuple[int, int]]:
    """(window, count) pairs present for ``prefix``, shortest window first."""
    pairs = []
    for column in row.index:
        if column.startswith(prefix + "__"):
            match = _WINDOW.search(column)
            count = _number(row[column])
            if match and count is not None:
                pairs.append((int(match.group(1)), int(count)))
    return sorted(pairs)


def _window_text(pairs: list[tuple[int, int]], noun: str = "") -> str:
    """``2 in the last 7 days, 5 in 90 days``: the shortest window with any, and the longest."""
    if not pairs:
        return ""
    nonzero = [(w, c) for w, c in pairs if c > 0]
    if not nonzero:
        return f"none in the last {pairs[-1][0]} days"
    first = nonzero[0]
    text = f"{first[1]}{noun} in the last {first[0]} days"
    last = pairs[-1]
    if last[0] != first[0] and last[1] != first[1]:
        text += f", {last[1]} in {last[0]} days"
    return text


def describe_group(group: str, kind: str, row: pd.Series) -> str:
    """The facts behind a group for one contact, in words.

    Parameters
    ----------
    group, kind : str
        From :func:`group_features`.
    row : pandas.Series
        The contact's feature values (the model's columns at least).

    Returns
    -------
    str
        e.g. ``"demo_requested: 2 in the last 7 days, last 1 day ago"``,
        ``"industry = software"``, ``"account: 3 active contacts in 30 days"``.
    """
    if kind == "event":
        parts = [_window_text(_counts(row, group))]
        since = _number(row.get(f"{group}__days_since_last"))
        parts.append(f"last {_days(since)}" if since is not None else "never")
        return f"{group}: " + ", ".join(p for p in parts if p)
    if kind == "fit":
        value = row.get(group)
        shown = "unknown" if value is None or (not isinstance(value, str) and pd.isna(value)) else value
        if isinstance(shown, float) and shown.is_integer():
            shown = int(shown)
        return f"{group} = {shown}"
    if group == ACCOUNT:
        active = sorted((int(m.group(1)), _number(row[c])) for c in row.index
                        if (m := re.search(r"^account__active_contacts_(\d+)d$", c)))
        contacts = _number(row.get("account__contacts"))
        parts = []
        if active:
            window, count = active[len(active) // 2]
            parts.append(f"{int(count or 0)} active contact{'s' if count != 1 else ''} in {window} days")
        if contacts is not None:
            parts.append(f"{int(contacts)} known")
        parts.append(_window_text(_counts(row, "account"), " events"))
        return "account: " + (", ".join(p for p in parts if p) or "none")
    if group == TENURE:
        tenure = _number(row.get("tenure_days"))
        return "known for " + (f"{tenure:.0f} days" if tenure is not None else "an unknown time")
    parts = [_window_text(_counts(row, "all"), " events")]
    types = sorted((int(m.group(1)), _number(row[c])) for c in row.index
                   if (m := re.search(r"^all__distinct_types_(\d+)d$", c)))
    if types and types[-1][1]:
        parts.append(f"{int(types[-1][1])} kinds in {types[-1][0]} days")
    since = _number(row.get("all__days_since_last"))
    parts.append(f"last {_days(since)}" if since is not None else "no activity yet")
    return "all activity: " + ", ".join(p for p in parts if p)
