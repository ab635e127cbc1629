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
    learned = pd.DataFrame({
        "group": list(explanation.groups.order),
        "facts": explanation.facts.iloc[row].to_numpy(),
        "learned_points": explanation.points.iloc[row].to_numpy(dtype="float64"),
    })
    by_group = breakdown.groupby("group", sort=False).agg(
        rule_points=("points", "sum"), rule_score_points=("score_points", "sum"),
        rules=("rule", lambda names: ", ".join(names)),
    ).reset_index()
    table = learned.merge(by_group, on="group", how="outer")
    table["learned_points"] = table["learned_points"].fillna(0.0)
    table[["rule_points", "rule_score_points"]] = table[["rule_points", "rule_score_points"]].fillna(0.0)
    table["rules"] = table["rules"].fillna("")
    table["facts"] = table["facts"].fillna(table["group"] + ": not a model feature")
    table["gap"] = table["learned_points"] - table["rule_score_points"]
    used = (table["learned_points"].abs() > 0) | (table["rules"] != "")
    table = table[used]
    return table.iloc[np.argsort(-table["gap"].abs().to_numpy(), kind="stable")].reset_index(drop=True)
