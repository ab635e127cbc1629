"""Value summaries per event type (features/value_stats.py) on Spark: equal to DuckDB's."""

import pandas as pd
import pytest

from propensity.features.build import build_features
from propensity.features.config import FeatureConfig
from propensity.features.spine import spine_from_frame
from tests.spark.compare import assert_same_table

pytestmark = pytest.mark.slow
CONFIG = FeatureConfig(windows_days=(30,), half_lives_days=(14.0,), monetary_types=(),
                       event_types=("purchase", "page_view"), lifetime_features=False, trend_features=False,
                       account_features=False, include_attributes=False, value_stats_types=("purchase",),
                       value_thresholds={"purchase": (50.0,), "page_view": (1.5,)})


def _built(events, con, world) -> pd.DataFrame:
    ids = sorted(world.contacts["contact_id"])
    spine = pd.DataFrame({"contact_id": ids * 2, "as_of": [pd.Timestamp("2025-04-15")] * len(ids)
                          + [pd.Timestamp("2025-05-15 06:30")] * len(ids)})
    out = build_features(events, spine_from_frame(con, spine), CONFIG).execute()
    return out.sort_values(["contact_id", "as_of"], ignore_index=True)


def test_value_stats_are_the_same_on_spark_as_on_duckdb(world_ws, spark_tables):
    ws, world = world_ws
    duck = ws.ibis_connection()
    expected = _built(duck.table("events"), duck, world)
    assert expected["purchase__value_mean"].notna().sum() >= 10 and expected["purchase__value_mean"].isna().any()
    actual = _built(spark_tables.events, spark_tables.con, world)
    assert_same_table(expected, actual)
