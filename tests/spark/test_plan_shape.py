"""The shape of the Spark plan of the default feature build: how often it reads the sources.

Spark inlines a subquery that the expression uses twice (it does not materialise CTEs), so
every shared part of the expression is computed, and its Parquet files read, once per use.
The account features used to be joined back onto the finished feature rows, which made the
plan read the events 16 times and the contacts 20 times (36 scans; ``benchmarks/plan_scans.py``).
This bounds the count on the plan alone: nothing is executed, no time is measured.
"""

import pytest

from propensity.features.build import build_features
from propensity.features.config import FeatureConfig
from propensity.features.spine import spine_at
from propensity.pipelines.plans import spark_plan_scans

pytestmark = pytest.mark.slow

# The events are read by the spine (spine_at, twice: the spine rows and their accounts), the
# spine rows' accounts, the members named by events and the history (purchase days included).
MAX_EVENT_SCANS = 5
MAX_SCANS = 13


def _default_build(tables, **update):
    config = FeatureConfig().model_copy(update=update)
    spine = spine_at(tables.events, "2025-05-01", tables.contacts)
    return build_features(tables.events, spine, config, contacts=tables.contacts)


def test_the_spark_plan_of_the_default_build_reads_the_events_a_bounded_number_of_times(spark_tables):
    scans = spark_plan_scans(spark_tables.con, _default_build(spark_tables))
    assert set(scans.by_source) == {"events", "contacts"}, scans.describe()
    assert scans.by_source["events"] <= MAX_EVENT_SCANS, scans.describe()
    assert scans.scans <= MAX_SCANS, scans.describe()


def test_account_features_add_only_their_own_passes_to_the_plan(spark_tables):
    # with accounts: + the spine again (events, contacts), the accounts' keys (events) and the
    # members (events, contacts twice); none of them repeats the feature pass
    without = spark_plan_scans(spark_tables.con, _default_build(spark_tables, account_features=False))
    full = spark_plan_scans(spark_tables.con, _default_build(spark_tables))
    assert without.by_source["events"] >= 2, without.describe()  # the spine and the history
    assert full.by_source["events"] - without.by_source["events"] <= 3, (full.describe(), without.describe())
