"""Features built exactly as a learned model was trained: the one place that says how.

Every consumer of a registered model (batch scoring on DuckDB or Spark, compare, explain) builds
its input here, from what the model recorded at training time: the resolved feature config
(windows, half-lives, families) and the event types that became columns. A change to what a
model sees (e.g. a new family) then lands once, not once per consumer.
"""

from __future__ import annotations

import ibis

from propensity.features.build import build_features
from propensity.features.config import FeatureConfig

__all__ = ["features_as_trained"]


def features_as_trained(events: ibis.Table, spine: ibis.Table, scorer, contacts: ibis.Table | None = None) -> ibis.Table:
    """The Ibis expression of ``spine``'s features as ``scorer`` (a LearnedScorer) was trained
    (point in time: each row's events with ``ts < as_of``)."""
    return build_features(events, spine, FeatureConfig.of_model(scorer.feature_config),
                          contacts=contacts, event_types=scorer.event_types)
