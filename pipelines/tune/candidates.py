"""Shapes a rule could take: the existing activities, re-decayed variants, and new event rules.

Every candidate is an :class:`Activity` with ``points=1, weight=1`` (a *unit* rule), so its raw
points from :func:`propensity.pipelines.rules.score.activity_points` are its per-unit contribution before
any cap. All candidates are computed in one pass over the events.
"""

from __future__ import annotations

from dataclasses import dataclass

from propensity.features.build import safe_name
from propensity.pipelines.rules.config import Activity, RuleSet

__all__ = ["Candidate", "candidate_rules", "uncovered_event_groups"]


@dataclass(frozen=True)
class Candidate:
    """One unit rule: ``column`` is its ``points__{column}`` name in the candidate pass."""

    column: str
    group: str  # the learned model's feature group it reads (the event type's safe name)
    activity: Activity  # points=1, weight=1
    existing: str | None  # name of the hand rule it re-shapes, None for a new rule


def uncovered_event_groups(rules: RuleSet, event_types: tuple[str, ...]) -> dict[str, str]:
    """Event types (safe name -> raw name) that no *unfiltered* rule reads.

    An event type read only through a ``where`` filter (page views of /pricing) is listed too:
    the learned model sees all of its events, and an unfiltered rule may carry what the
    filtered one misses.
    """
    covered = {safe_name(a.event) for a in rules.activities if not a.where}
    return {safe_name(e): e for e in event_types if safe_name(e) not in covered}


def candidate_rules(
    rules: RuleSet,
    event_types: tuple[str, ...],
    *,
    half_lives: tuple[float | None, ...],
    new_expiries: tuple[float, ...],
    value_weighted: tuple[str, ...] = (),
    reshape: bool = True,
    new_rules: bool = True,
    reshape_expiries: tuple[float | None, ...] = (),
) -> list[Candidate]:
    """Unit rules to evaluate against the learned model's SHAP values.

    Parameters
    ----------
    rules : RuleSet
        The hand rules; each activity is a candidate as it is (unit points).
    event_types : tuple of str
        Event types the learned model has features for.
    half_lives : tuple
        Half-lives tried for re-shaped and new rules (``None``: no decay).
    new_expiries : tuple of float
        Expiry windows tried for new rules without decay (a plain recent count).
    value_weighted : tuple of str
        Event types whose new rules multiply by the event's value (``per_value``), as the
        feature config weights them.
    reshape, new_rules : bool
        Whether to try other half-lives for existing rules, and new rules for uncovered events.
    reshape_expiries : tuple
        Expiry windows (days; ``None``: never) tried for existing rules besides their own, each
        with every half-life: a lifetime count beside a recent one says "a regular who went quiet".
    """
    out: list[Candidate] = []

    def add(group: str, activity: Activity, existing: str | None) -> None:
        column = f"c{len(out)}"
        out.append(Candidate(column, group, activity.model_copy(update={"name": column}), existing))

    for activity in rules.activities:
        unit = activity.model_copy(update={"points": 1.0, "weight": 1.0, "cap": None, "description": None})
        add(safe_name(activity.event), unit, activity.name)
        if reshape:
            for half_life in half_lives:
                if half_life != activity.half_life_days:
                    add(safe_name(activity.event), unit.model_copy(update={"half_life_days": half_life}), activity.name)
            for expiry in dict.fromkeys(reshape_expiries):
                if expiry == activity.expires_after_days:
                    continue
                for half_life in half_lives:
                    add(safe_name(activity.event), unit.model_copy(
                        update={"half_life_days": half_life, "expires_after_days": expiry}), activity.name)
    if new_rules:
        weighted = {safe_name(e) for e in value_weighted}
        for group, event in uncovered_event_groups(rules, event_types).items():
            per_value = group in weighted
            for half_life in half_lives:
                if half_life is None:
                    for expiry in new_expiries:
                        add(group, Activity(name="x", event=event, points=1.0, expires_after_days=expiry,
                                            per_value=per_value), None)
                else:
                    add(group, Activity(name="x", event=event, points=1.0, half_life_days=half_life,
                                        per_value=per_value), None)
    return out
