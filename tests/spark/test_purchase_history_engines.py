"""The purchase-history family (features/purchase_history.py) gives the same table on DuckDB and on
another engine (Spark; PostgreSQL): window ranks per purchase day, date differences, the join on
each row's last purchase. Runs once per engine (tests/spark/conftest.py), skipped where one is missing."""

import pandas as pd
import pytest

from propensity.features.build import build_features
from propensity.features.config import FeatureConfig
from propensity.features.spine import spine_from_frame
from tests.spark.compare import assert_same_table

pytestmark = pytest.mark.slow
CONFIG = FeatureConfig(windows_days=(30,), half_lives_days=(14.0,), monetary_types=("purchase",),
                       purchase_history_features=True, lifetime_features=False, trend_features=False,
                       account_features=False, include_attributes=False)


def _spine(world) -> pd.DataFrame:
    ids = sorted(world.contacts["contact_id"])[:400]
    return pd.DataFrame({"contact_id": ids * 2,
                         "as_of": [pd.Timestamp("2025-04-01")] * len(ids) + [pd.Timestamp("2025-05-15 12:00")] * len(ids)})


def test_the_family_is_equal_on_duckdb_and_another_engine(world_ws, engine_tables):
    ws, world = world_ws
    spine = _spine(world)
    duck = ws.ibis_connection()
    expected = build_features(duck.table("events"), spine_from_frame(duck, spine), CONFIG).execute()
    actual = build_features(engine_tables.events, spine_from_frame(engine_tables.con, spine), CONFIG).execute()
    since = [c for c in expected.columns if "__count_since_last_purchase" in c]
    assert since and expected["purchase__last_gap_days"].notna().any() and expected[since[0]].isna().any()
    assert (expected[since].fillna(-1).to_numpy() > 0).any() and (expected[since].fillna(-1).to_numpy() == 0).any()
    assert_same_table(expected.sort_values(["contact_id", "as_of"], ignore_index=True),
                      actual.sort_values(["contact_id", "as_of"], ignore_index=True))
