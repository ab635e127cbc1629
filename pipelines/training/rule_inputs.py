"""The rules as an input of the learned model, not only its rival.

Two parts, both stated in the training summary:

1. **Inputs.** The model sees what the hand rules read: one ``rule__{activity}`` column per
   activity (its uncapped points at the cut-off, from :func:`rules.score.activity_points`, the
   rule engine's own point-in-time expression: caps are monotone, so trees see the capped value
   too) and one ``rule__attribute__{name}`` column per attribute a fit criterion reads.
2. **Never below the rules on validation, by construction.** From those columns the scorer
   recomputes the hand rules' 0-5 score with :func:`rules.score.score_frame` (the same formula,
   not a copy) and blends: ``logit p = (1 - alpha) * logit p_model + alpha * scale * (rule_score - centre)``,
   with ``alpha`` chosen on the validation split from a grid that contains 0 (the model alone)
   and 1 (a monotone map of the rule score, hence exactly the rules' ranking). The chosen blend
   therefore ranks the validation rows at least as well as the rules and as the model alone.
   The champion gate on the test split decides, as before.
"""

from __future__ import annotations

import ibis
import pandas as pd

from propensity.features.history import versions_at
from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.rules.score import activity_points
from propensity.pipelines.training.rule_blend import (
    PREFIX,
    attribute_names,
    rule_input_columns,
)

__all__ = ["add_rule_inputs", "rule_inputs_expr"]

_ATTRIBUTE = f"{PREFIX}attribute__"


def rule_inputs_expr(events: ibis.Table, spine: ibis.Table, rules: RuleSet,
                     contacts: ibis.Table | None, contact_history: ibis.Table | None = None) -> ibis.Table:
    """``contact_id, as_of`` and the rule columns of ``spine``'s rows (events with ``ts < as_of``; with
    ``contact_history``, the attributes valid at ``as_of``, as the feature build reads them).

    An attribute a fit criterion reads that the contacts table lacks is an error naming it (the
    rule score would silently leave its points out).
    """
    points = activity_points(events, spine, rules)
    out = points.select("contact_id", "as_of",
                        **{f"{PREFIX}{a.name}": points[f"points__{a.name}"] for a in rules.activities})
    attributes = attribute_names(rules)
    if not attributes:
        return out
    if contacts is None:
        raise ValueError(f"rules {rules.name!r} have fit criteria on {attributes} but no contacts table is loaded")
    missing = [name for name in attributes if name not in contacts.columns]
    if missing:
        raise ValueError(f"rules {rules.name!r} read contact attributes the contacts table lacks: {missing}")
    if contact_history is not None:  # the version of each row's as_of (features/history.py)
        valid = versions_at(contact_history, out, attributes)
        valid = valid.select(_r_contact=valid.contact_id, _r_as_of=valid.as_of,
                             **{f"{_ATTRIBUTE}{name}": valid[name] for name in attributes})
        joined = out.left_join(valid, [out.contact_id.cast("string") == valid._r_contact,
                                       out.as_of == valid._r_as_of])
        return joined.select("contact_id", "as_of", *rule_input_columns(rules))
    known = contacts.select(_r_contact=contacts.contact_id.cast("string"),
                            **{f"{_ATTRIBUTE}{name}": contacts[name] for name in attributes})
    # one row per contact, as distinct(on=...) picks it, but portable: that compiles to a FIRST
    # aggregate PostgreSQL lacks; a row number needs an order on Spark (the key itself: any row)
    ranked = known.mutate(_r_n=ibis.row_number().over(group_by="_r_contact", order_by="_r_contact"))
    known = ranked.filter(ranked._r_n == 0).drop("_r_n")
    joined = out.left_join(known, out.contact_id.cast("string") == known._r_contact)
    return joined.select("contact_id", "as_of", *[c for c in rule_input_columns(rules)])


def add_rule_inputs(features: pd.DataFrame, events: ibis.Table, spine: ibis.Table, rules: RuleSet,
                    contacts: ibis.Table | None,
                    contact_history: ibis.Table | None = None) -> tuple[pd.DataFrame, list[str]]:
    """``features`` (keys ``contact_id, as_of``) with the rule columns of the same rows, and their names
    (training and the walk-forward backtest both build their frames with it)."""
    inputs = rule_inputs_expr(events, spine, rules, contacts, contact_history).execute()
    inputs["as_of"] = pd.to_datetime(inputs["as_of"]).astype("datetime64[us]")
    keys = ["contact_id", "as_of"]
    return features.merge(inputs, on=keys, how="left", validate="one_to_one"), rule_input_columns(rules)


