"""The hand-weighted rule model: configuration and scoring."""

from propensity.pipelines.rules.config import (
    RulesConfigError,
    RuleSet,
    dump_rules,
    load_rules,
)
from propensity.pipelines.rules.score import (
    rollup_accounts,
    score_contacts,
    score_frame,
)

__all__ = [
    "RuleSet",
    "RulesConfigError",
    "dump_rules",
    "load_rules",
    "rollup_accounts",
    "score_contacts",
    "score_frame",
]
