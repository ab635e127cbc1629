"""BG/NBD expected purchases (a Python UDF, training/expected_purchases.py) on the other engines:
equal to DuckDB's on Spark, refused with the reason on PostgreSQL."""

import pandas as pd
import pytest

from propensity.features.build import build_features
from propensity.features.config import FeatureConfig
from propensity.features.spine import spine_from_frame
from propensity.pipelines.training.expected_purchases import (
    BgNbd,
    ExpectedPurchases,
    expected_purchases_expr,
)
from tests.spark.compare import assert_same_table

pytestmark = pytest.mark.slow
CONFIG = FeatureConfig(windows_days=(30,), half_lives_days=(14.0,), monetary_types=("purchase",),
                       event_types=("purchase", "page_view"), lifetime_features=False, trend_features=False,
                       account_features=False, include_attributes=False)
FITTED = ExpectedPurchases(horizon_days=30.0, params={"purchase": BgNbd(r=0.8, alpha=25.0, a=1.4, b=5.0)},
                           fitted_as_of="2025-04-01")
COLUMN = "purchase__bgnbd_expected_30d"


def _spine(world) -> pd.DataFrame:
    ids = sorted(world.contacts["contact_id"])
    return pd.DataFrame({"contact_id": ids, "as_of": pd.Timestamp("2025-05-15")})


def _expected_purchases(tables_events, con, spine) -> pd.DataFrame:
    built = build_features(tables_events, spine_from_frame(con, spine), CONFIG)
    out = expected_purchases_expr(built, FITTED).execute()
    return out.sort_values("contact_id", ignore_index=True)


def test_the_udf_gives_the_same_values_on_spark_as_on_duckdb(world_ws, spark_tables):
    ws, world = world_ws
    spine = _spine(world)
    duck = ws.ibis_connection()
    expected = _expected_purchases(duck.table("events"), duck, spine)
    assert expected[COLUMN].notna().sum() >= 10 and expected[COLUMN].isna().any()  # buyers and non-buyers
    actual = _expected_purchases(spark_tables.events, spark_tables.con, spine)
    assert_same_table(expected, actual)


def test_postgresql_refuses_the_family_naming_the_column(world_ws, postgres_tables):
    _, world = world_ws
    built = build_features(postgres_tables.events, spine_from_frame(postgres_tables.con, _spine(world)), CONFIG)
    with pytest.raises(ValueError, match=f"{COLUMN}.*not on postgres.*expected_purchases: false"):
        expected_purchases_expr(built, FITTED)
