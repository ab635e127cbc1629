"""Features built exactly as a learned model was trained: the one place that says how.

Every consumer of a registered model (batch scoring on DuckDB or Spark, compare, explain) builds
its input here, from what the model recorded at training time: the resolved feature config
(windows, half-lives, families) and the event types that became columns. A change to what a
model sees (e.g. a new family) then lands once, not once per consumer.
"""

from __future__ import annotations

import ibis
import pandas as pd

from propensity.features.build import build_features
from propensity.features.config import FeatureConfig
from propensity.pipelines.training.expected_purchases import (
    ExpectedPurchases,
    expected_purchases_expr,
)
from propensity.pipelines.training.rule_blend import rule_input_columns
from propensity.pipelines.training.rule_inputs import rule_inputs_expr

__all__ = ["features_as_trained", "features_frame"]


def features_as_trained(events: ibis.Table, spine: ibis.Table, scorer, contacts: ibis.Table | None = None,
                        contact_history: ibis.Table | None = None) -> ibis.Table:
    """The Ibis expression of ``spine``'s features as ``scorer`` (a LearnedScorer) was trained
    (point in time: each row's events with ``ts < as_of``, and with ``contact_history`` its attributes
    as they were at ``as_of`` when the model was trained so), with the rule columns (``rule__*``,
    training/rule_inputs.py) when the model reads the rules, and the BG/NBD expected purchases
    (training/expected_purchases.py, with the parameters it stored) when it reads those."""
    config = FeatureConfig.of_model(scorer.feature_config)
    features = build_features(events, spine, config, contacts=contacts, event_types=scorer.event_types,
                              contact_history=contact_history)
    stored = getattr(scorer, "expected_purchases", None)
    if stored:
        features = expected_purchases_expr(features, ExpectedPurchases.from_dict(stored))
    rules = getattr(scorer, "input_rules", None)
    if rules is None:
        return features
    history = contact_history if config.attributes.values == "as_of" else None
    inputs = rule_inputs_expr(events, spine, rules, contacts, history).rename(_k_contact="contact_id", _k_as_of="as_of")
    joined = features.left_join(inputs, [features.contact_id == inputs._k_contact, features.as_of == inputs._k_as_of])
    return joined.select(*features.columns, *rule_input_columns(rules))


def features_frame(features: ibis.Table) -> pd.DataFrame:
    """``features.execute()``: the same frame, through Arrow's conversion on DuckDB.

    Ibis' DuckDB ``execute`` turns every column that holds a NULL into Python objects and back
    (``to_pylist``); a feature frame has dozens of such columns (53 of the 20k demo's 213), which
    cost ~0.4 s of CPU of ``score --model``. Arrow's own conversion gives the same values and
    dtypes (``tests/pipelines/explain/test_fast_paths.py``); other backends keep ``execute``.
    """
    if features.get_backend().name == "duckdb":
        return features.to_pyarrow().to_pandas()
    return features.execute()
