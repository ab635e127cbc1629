"""The rule score's own breakdown, and where it disagrees with the learned model.

A rule score is already additive in raw points (``points__{rule}`` columns sum to ``points``);
the 0-5 ``scale`` is piecewise linear, so raw points are carried onto 0-5 the same way the
learned model's log-odds are (:mod:`propensity.pipelines.explain.attribution`): each rule gets its raw
points times the secant slope of the scale between 0 points and the contact's total, and the
rule points in 0-5 sum to ``rule_score - scale(0)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from propensity.features.build import safe_name
from propensity.pipelines.explain.explain import ScoreExplanation
from propensity.pipelines.rules.config import Activity, RuleSet
from propensity.pipelines.rules.score import scale_points

__all__ = ["compare_with_rules", "rule_breakdown"]


def rule_breakdown(scored: pd.DataFrame, rules: RuleSet, row: int = 0) -> pd.DataFrame:
    """One contact's rule score, point by point.

    Parameters
    ----------
    scored : pandas.DataFrame
        Output of ``score_contacts`` / ``score_frame`` for ``rules``.
    rules : RuleSet
    row : int
        Position of the contact in ``scored``.

    Returns
    -------
    pandas.DataFrame
        ``rule, kind (activity|fit), reads`` (the event type or attribute), ``group`` (the
        learned model's group the rule reads: the event type's safe name or the attribute),
        ``points`` (raw) and ``score_points`` (0-5; they sum to ``rule_score - scale(0)``).
    """
    record = scored.iloc[row]
    items = list(rules.activities) + list(rules.fit)
    points = np.array([float(record[f"points__{r.name}"]) for r in items])
    total = float(record["points"])
    zero = float(scale_points(np.array([0.0]), rules)[0])
    delta = float(record["rule_score"]) - zero
    slope = delta / total if abs(total) > 1e-12 else 0.0
    return pd.DataFrame({
        "rule": [r.name for r in items],
        "kind": ["activity" if isinstance(r, Activity) else "fit" for r in items],
        "reads": [r.event if isinstance(r, Activity) else r.attribute for r in items],
        "group": [safe_name(r.event) if isinstance(r, Activity) else r.attribute for r in items],
        "points": points,
        "score_points": points * slope,
    })


def compare_with_rules(explanation: ScoreExplanation, row: int, breakdown: pd.DataFrame) -> pd.DataFrame:
    """Learned and rule contributions side by side, per group, biggest disagreement first.

    Returns
    -------
    pandas.DataFrame
        ``group, facts, learned_points`` (0-5, relative to the learned baseline),
        ``rule_points`` (raw points of the rules reading the group), ``rule_score_points``
        (0-5, relative to zero points), ``rules`` (their names) and ``gap``
        (``learned_points - rule_score_points``). Groups neither model uses are left out.
    """
    # plain Python over a few dozen groups: the pandas groupby and outer merge this replaces cost
    # ~13 ms per contact, a quarter of the service's explain answer
    order = list(explanation.groups.order)
    learned = dict(zip(order, explanation.points.iloc[row].to_numpy(dtype="float64")))
    facts = dict(zip(order, explanation.facts.iloc[row].to_numpy()))
    rule_points: dict[str, float] = {}
    rule_score_points: dict[str, float] = {}
    names: dict[str, list[str]] = {}
    for group, rule, points, score_points in zip(breakdown["group"], breakdown["rule"], breakdown["points"],
                                                 breakdown["score_points"]):
        rule_points[group] = rule_points.get(group, 0.0) + float(points)
        rule_score_points[group] = rule_score_points.get(group, 0.0) + float(score_points)
        names.setdefault(group, []).append(str(rule))
    rows = []
    for group in sorted(set(learned) | set(names)):  # an outer join's order: the keys sorted
        fact = facts.get(group)
        learned_points = float(learned.get(group, 0.0))
        if not (abs(learned_points) > 0 or group in names):
            continue  # neither model uses the group
        rows.append({
            "group": group,
            "facts": f"{group}: not a model feature" if fact is None or pd.isna(fact) else fact,
            "learned_points": learned_points,
            "rule_points": rule_points.get(group, 0.0),
            "rule_score_points": rule_score_points.get(group, 0.0),
            "rules": ", ".join(names.get(group, [])),
            "gap": learned_points - rule_score_points.get(group, 0.0),
        })
    columns = ["group", "facts", "learned_points", "rule_points", "rule_score_points", "rules", "gap"]
    rows.sort(key=lambda r: -abs(r["gap"]))  # stable: ties keep the sorted group order
    return pd.DataFrame(rows, columns=columns)
