"""Explain learned scores with SHAP: per contact, in batch, globally; beside the rule breakdown.

See :mod:`propensity.pipelines.explain.attribution` for how log-odds contributions become 0-5 points.
"""

from propensity.pipelines.explain.attribution import (
    carry_to_points,
    feature_contributions,
    score_from_margin,
)
from propensity.pipelines.explain.change import (
    ChangeSplit,
    split_learned_change,
    split_rule_change,
    split_rule_views,
)
from propensity.pipelines.explain.coalitions import group_shapley
from propensity.pipelines.explain.explain import (
    ScoreExplanation,
    contact_table,
    dependence,
    explain_contacts,
    global_importance,
    reason_items,
    top_reasons,
)
from propensity.pipelines.explain.groups import (
    FeatureGroups,
    describe_group,
    group_features,
)
from propensity.pipelines.explain.plot import plot_dependence, plot_importance
from propensity.pipelines.explain.rules import compare_with_rules, rule_breakdown

__all__ = [
    "ChangeSplit",
    "FeatureGroups",
    "ScoreExplanation",
    "carry_to_points",
    "compare_with_rules",
    "contact_table",
    "dependence",
    "describe_group",
    "explain_contacts",
    "feature_contributions",
    "global_importance",
    "group_features",
    "group_shapley",
    "plot_dependence",
    "plot_importance",
    "rule_breakdown",
    "score_from_margin",
    "split_learned_change",
    "split_rule_change",
    "split_rule_views",
    "reason_items",
    "top_reasons",
]
