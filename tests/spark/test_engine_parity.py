"""The same Ibis feature definitions and rule pass on DuckDB and on another engine give the same
table: Spark (Ibis' PySpark backend) and PostgreSQL (a warehouse engine, ``--engine postgres``).

Independent engines, same expressions: any difference is a dialect or plumbing bug (NULL
handling, integer division, timestamp units, JSON property lookups, bit operations). Each test
taking ``engine_tables`` runs once per engine (tests/spark/conftest.py), skipped with the reason
where an engine is missing (no pyspark or Java; no PostgreSQL server).
"""

from pathlib import Path

import pandas as pd
import pytest

from propensity.features.build import build_features
from propensity.features.config import FeatureConfig
from propensity.features.spine import spine_from_frame
from propensity.pipelines.engines import EngineConfig, load_engine_config, open_tables
from propensity.pipelines.jobs import SpineChoice, run_rule_scores
from propensity.pipelines.rules import load_rules
from tests.spark.compare import assert_same_table

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
# one pattern per family; each must be present and carry information on the test world
FAMILIES = {
    "windows": "__count_30d", "decayed": "__decayed_", "days_since_last": "__days_since_last",
    "active_days": "__active_days_", "distinct_types": "all__distinct_types_", "value": "value__",
    "tenure": "tenure_days", "momentum": "all__momentum_", "account": "account__",
    "attributes": "industry",
    # issue 13's families (on by default; monetary types found by `auto` on each engine)
    "lifetime_count": "__count_total", "days_since_first": "__days_since_first",
    "mean_gap": "__mean_gap_days", "trend": "__trend_", "rfm": "__rfm_", "value_total": "__value_total",
}


def _spine(world) -> pd.DataFrame:
    # two cut-offs, every row its own as_of (Feast-style), contacts with and without history
    ids = sorted(world.contacts["contact_id"])[:400]
    return pd.DataFrame({
        "contact_id": ids * 2,
        "as_of": [pd.Timestamp("2025-04-01")] * len(ids) + [pd.Timestamp("2025-05-15 12:00")] * len(ids),
    })


def test_every_feature_family_is_equal_on_duckdb_and_another_engine(world_ws, engine_tables):
    ws, world = world_ws
    spine = _spine(world)
    duck = ws.ibis_connection()
    config = FeatureConfig()
    expected = build_features(duck.table("events"), spine_from_frame(duck, spine), config,
                              contacts=duck.table("contacts")).execute()
    actual = build_features(engine_tables.events, spine_from_frame(engine_tables.con, spine), config,
                            contacts=engine_tables.contacts).execute()

    assert len(expected) == len(spine)
    for family, pattern in FAMILIES.items():
        columns = [c for c in expected.columns if pattern in c]
        assert columns, f"no {family} column"
        values = expected[columns].apply(pd.to_numeric, errors="coerce")
        assert values.notna().any().any() or family == "attributes", family
    # the comparison must cover NULLs, zeros and fractions, not just one kind of value
    assert expected["all__days_since_last"].isna().any() and expected["all__days_since_last"].notna().any()
    assert (expected["all__count_30d"] == 0).any() and (expected["all__count_30d"] > 0).any()
    assert_same_table(expected, actual)


def test_rule_scores_are_equal_on_duckdb_and_another_engine(world_ws, engine_tables):
    ws, _ = world_ws
    rules = load_rules(ROOT / "configs" / "rules" / "saas.yaml")
    assert any(a.where for a in rules.activities), "the rules must exercise a JSON property filter"
    choice = SpineChoice(as_of=pd.Timestamp("2025-05-01").to_pydatetime())
    expected = run_rule_scores(ws, choice, rules)
    actual = run_rule_scores(ws, choice, rules, tables=engine_tables)
    filtered = [f"points__{a.name}" for a in rules.activities if a.where]
    assert (expected[filtered].to_numpy() != 0).any(), "the property filter never matched"
    assert expected["rule_score"].nunique() > 5
    assert_same_table(expected, actual)


def test_parquet_sources_bind_to_canonical_names_and_missing_columns_fail(spark, tmp_path):
    frame = pd.DataFrame({"contact_id": ["a"], "ts": pd.to_datetime(["2025-01-01"])})
    frame.to_parquet(tmp_path / "bad.parquet")
    config = EngineConfig.model_validate(
        {"engine": "spark", "sources": {"events": {"parquet": str(tmp_path / "bad.parquet")}}})
    with pytest.raises(ValueError, match=r"events source \(parquet .*bad.parquet\) lacks column\(s\) \['event_type'\]"):
        open_tables(config, session=spark)


def test_cli_features_on_spark_write_a_parquet_folder_equal_to_duckdb(world_ws, spark, tmp_path):
    from propensity.pipelines.cli import main

    ws, _ = world_ws
    config = tmp_path / "features.yaml"  # a small plan: this checks the plumbing, not the families
    config.write_text("windows_days: [7, 30]\nhalf_lives_days: [7]\naccount_features: false\n"
                      "event_types: [email_open, page_view]\n")
    args = ["-w", str(ws.path), "features", "--as-of", "2025-04-20", "--config", str(config)]
    assert main([*args, "--out", str(tmp_path / "duck.parquet")]) == 0
    assert main([*args, "--engine", "spark", "--out", str(tmp_path / "spark")]) == 0
    assert (tmp_path / "spark").is_dir()
    expected = pd.read_parquet(tmp_path / "duck.parquet")
    assert len(expected) > 100
    assert_same_table(expected, pd.read_parquet(tmp_path / "spark"))


# ----------------------------------------------------------------------------- PostgreSQL as users run it


def test_cli_loads_the_workspace_into_postgres_and_computes_features_there(world_ws, postgres_url, tmp_path,
                                                                            monkeypatch, capsys):
    from propensity.pipelines.cli import main
    from tests.pipelines.serve.support import fresh_postgres_database

    ws, _ = world_ws
    secret = "not-shown-4711"  # the test server trusts local connections: any password is accepted
    config = tmp_path / "features.yaml"  # a small plan: this checks the plumbing, not the families
    config.write_text("windows_days: [7, 30]\nhalf_lives_days: [7]\naccount_features: false\n"
                      "event_types: [email_open, page_view, pricing_view]\n")
    with fresh_postgres_database(postgres_url) as url:
        import sqlalchemy as sa

        monkeypatch.setenv("PROPENSITY_ENGINE_URL",
                           sa.make_url(url).set(password=secret).render_as_string(hide_password=False))
        assert main(["-w", str(ws.path), "engine", "load", "--engine", "postgres"]) == 0
        assert main(["-w", str(ws.path), "engine", "load", "--engine", "postgres"]) == 2  # nothing appended
        assert main(["-w", str(ws.path), "engine", "load", "--engine", "postgres", "--replace"]) == 0
        args = ["-w", str(ws.path), "features", "--as-of", "2025-04-20", "--config", str(config)]
        assert main([*args, "--engine", "postgres", "--out", str(tmp_path / "pg.parquet")]) == 0
        assert main([*args, "--out", str(tmp_path / "duck.parquet")]) == 0
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert text.count(f"events -> events: {ws.counts()['events']:,} rows") == 2  # loaded, then replaced
    assert "table events exists already in the postgres engine: pass --replace" in text
    assert "computed on postgres" in text and "postgresql+psycopg://***@" in text
    assert secret not in text
    expected = pd.read_parquet(tmp_path / "duck.parquet")
    assert len(expected) > 100
    # after --replace: events appended instead of replaced would double every count here
    assert_same_table(expected, pd.read_parquet(tmp_path / "pg.parquet"))


def test_the_users_own_postgres_tables_are_read_through_the_shipped_config_mapping(world_ws, postgres_engine_url,
                                                                                    monkeypatch):
    """configs/engines/postgres.yaml: other table names in a schema, other column names, and
    `timestamptz` columns (read as UTC whatever the server's time zone)."""
    import psycopg

    ws, _ = world_ws
    with psycopg.connect(postgres_engine_url.replace("+psycopg", ""), autocommit=True) as conn:
        # sessions on this database default to another zone than UTC: the engine must set UTC itself
        conn.execute(f"ALTER DATABASE {conn.info.dbname} SET timezone TO 'America/New_York'")
        conn.execute("CREATE SCHEMA IF NOT EXISTS analytics")
        conn.execute("CREATE TABLE IF NOT EXISTS analytics.web_events AS SELECT event_id, contact_id AS user_id, "
                     "event_type AS name, ts AT TIME ZONE 'UTC' AS occurred_at, value, account_id, properties FROM events")
        conn.execute("CREATE TABLE IF NOT EXISTS analytics.people AS SELECT contact_id AS user_id, account_id, "
                     "created_at, company_size, industry, country, role, plan_interest, lead_source FROM contacts")
        conn.execute("CREATE TABLE IF NOT EXISTS analytics.conversions AS SELECT outcome_id, contact_id AS user_id, "
                     "ts AS converted_at, outcome, value FROM outcomes")
    monkeypatch.setenv("PROPENSITY_ENGINE_URL", postgres_engine_url)
    tables = open_tables(load_engine_config(ROOT / "configs" / "engines" / "postgres.yaml"))
    try:
        assert tables.events.ts.type().is_timestamp() and tables.events.ts.type().timezone is not None
        rules = load_rules(ROOT / "configs" / "rules" / "saas.yaml")
        choice = SpineChoice(as_of=pd.Timestamp("2025-05-01").to_pydatetime())
        expected = run_rule_scores(ws, choice, rules)
        actual = run_rule_scores(ws, choice, rules, tables=tables)
        assert expected["rule_score"].nunique() > 5
        assert_same_table(expected, actual)
        assert len(tables.outcomes.execute()) == ws.counts()["outcomes"]
    finally:
        tables.con.disconnect()


def test_learned_scores_computed_on_postgres_equal_duckdbs(world, postgres_url, monkeypatch, tmp_path):
    """`propensity score --model VERSION --engine postgres`: the model's features built in PostgreSQL
    as it was trained, the model applied here; the session's trained world (tests/worlds.py), a
    spine file of 400 of its contacts (the plumbing is under test, not the scale)."""
    from propensity.pipelines.engines import EngineConfig, load_into_engine
    from propensity.pipelines.project import Project
    from tests.pipelines.serve.support import fresh_postgres_database

    project = Project(world.ws)
    contacts = sorted(world.ws.table("contacts")["contact_id"])[::6][:400]
    spine = tmp_path / "spine.csv"
    pd.DataFrame({"contact_id": contacts, "as_of": "2025-05-01"}).to_csv(spine, index=False)
    choice = SpineChoice(spine=str(spine))
    expected = project.score_with_model(choice, world.version, world.model_name)
    with fresh_postgres_database(postgres_url) as url:
        monkeypatch.setenv("PROPENSITY_ENGINE_URL", url)
        load_into_engine(world.ws, EngineConfig(engine="postgres"))
        tables = open_tables(EngineConfig(engine="postgres"))
        try:
            actual = project.score_with_model(choice, world.version, world.model_name, tables=tables)
        finally:
            tables.con.disconnect()
    assert expected["probability"].nunique() > 10, "a constant model would prove nothing"
    assert_same_table(expected.assign(band=expected["band"].astype("string")),
                      actual.assign(band=actual["band"].astype("string")))
