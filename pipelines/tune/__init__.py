"""Tune the hand-weighted rules from the learned model's SHAP values, and backtest the proposal.

See :mod:`propensity.pipelines.tune.propose` for the method; its config and result types are in
:mod:`propensity.pipelines.tune.config`, the per-group shape fits in :mod:`propensity.pipelines.tune.shapes`.
"""

from propensity.pipelines.tune.backtest import (
    backtest_table,
    band_volumes,
    gap_closed,
    rules_diff,
)
from propensity.pipelines.tune.candidates import (
    Candidate,
    candidate_rules,
    uncovered_event_groups,
)
from propensity.pipelines.tune.propose import (
    Proposal,
    TuneConfig,
    fit_criteria_for,
    propose_rules,
)
from propensity.pipelines.rules.rounding import nice_round

__all__ = [
    "Candidate",
    "Proposal",
    "TuneConfig",
    "backtest_table",
    "band_volumes",
    "candidate_rules",
    "fit_criteria_for",
    "gap_closed",
    "nice_round",
    "propose_rules",
    "rules_diff",
    "uncovered_event_groups",
]
