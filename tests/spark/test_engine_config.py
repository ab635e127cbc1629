"""Engine configs: the shipped ones load, mistakes fail naming the file and key (no Spark needed)."""

from pathlib import Path

import pandas as pd
import pytest

from propensity.pipelines.engines import EngineConfigError, load_engine_config, open_tables, spark_master

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "engines"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_engine_configs_load(path):
    config = load_engine_config(path)
    assert config.engine in ("duckdb", "spark", "postgres") and config.sources.events is not None


def test_an_unknown_key_or_two_kinds_of_source_fail_naming_the_file(tmp_path):
    bad = tmp_path / "engine.yaml"
    bad.write_text("engine: spark\nsparkk: {master: \"local[1]\"}\n")
    with pytest.raises(EngineConfigError, match=r"engine\.yaml: invalid engine config: sparkk"):
        load_engine_config(bad)
    bad.write_text("engine: spark\nsources: {events: {parquet: a/, table: b}}\n")
    with pytest.raises(EngineConfigError, match="exactly one of `parquet`"):
        load_engine_config(bad)


def test_spark_master_prefers_config_then_environment_then_local(monkeypatch):
    for name in ("SPARK_MASTER", "PYSPARK_GATEWAY_PORT", "DATABRICKS_RUNTIME_VERSION"):
        monkeypatch.delenv(name, raising=False)
    assert spark_master() == "local[2]"
    monkeypatch.setenv("SPARK_MASTER", "spark://head:7077")
    assert spark_master() == "spark://head:7077"
    assert spark_master("yarn") == "yarn"
    monkeypatch.delenv("SPARK_MASTER")
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    assert spark_master() is None  # Databricks' own master stands


def test_duckdb_over_parquet_sources_checks_timestamp_columns(tmp_path):
    pd.DataFrame({"contact_id": ["a"], "event_type": ["x"], "ts": ["2025-01-01"]}).to_parquet(tmp_path / "e.parquet")
    path = tmp_path / "engine.yaml"
    path.write_text(f"engine: duckdb\nsources: {{events: {{parquet: {tmp_path / 'e.parquet'}}}}}\n")
    with pytest.raises(EngineConfigError, match=r"events source \(parquet .*e\.parquet\): column 'ts' is string"):
        open_tables(load_engine_config(path))


def test_features_over_parquet_sources_equal_the_ingested_workspace_through_the_cli(tmp_path):
    from propensity.features.store import Workspace, ingest_file
    from propensity.pipelines.cli import main
    from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world

    paths = write_world(generate_world(WorldConfig(contacts=150, days=90, seed=4)), tmp_path / "data")
    ws = Workspace(tmp_path / "ws")
    for kind in ("contacts", "events", "outcomes"):
        ingest_file(ws, kind, paths[kind])
    config = tmp_path / "engine.yaml"
    config.write_text(
        "engine: duckdb\nsources:\n"
        + "".join(f"  {kind}: {{parquet: '{paths[kind]}'}}\n" for kind in ("events", "contacts", "outcomes"))
    )
    args = ["-w", str(ws.path), "features", "--as-of", "2025-03-15"]
    assert main([*args, "--out", str(tmp_path / "a.parquet")]) == 0
    assert main([*args, "--engine-config", str(config), "--out", str(tmp_path / "b.parquet")]) == 0
    a, b = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    assert len(a) > 100
    pd.testing.assert_frame_equal(a, b)
    assert main([*args, "--engine", "sparkk"]) == 2


# ----------------------------------------------------------------------------- warehouse engines
# (no server needed: what is refused before connecting, and a real driver's failure, redacted)


def test_an_engine_must_be_duckdb_spark_or_an_ibis_backend():
    from propensity.pipelines.engines import EngineConfig

    assert EngineConfig(engine="postgres").is_warehouse and not EngineConfig(engine="spark").is_warehouse
    with pytest.raises(ValueError, match=r"engine must be duckdb, spark or an Ibis backend \(athena, .*postgres.*\), not 'postgress'"):
        EngineConfig(engine="postgress")
    with pytest.raises(ValueError, match="url_env is for warehouse engines"):
        EngineConfig(engine="duckdb", url_env="MY_URL")
    with pytest.raises(ValueError, match="reads tables, not Parquet"):
        EngineConfig.model_validate({"engine": "postgres", "sources": {"events": {"parquet": "e.parquet"}}})


def test_a_missing_url_variable_is_named_and_a_missing_driver_names_its_extra(monkeypatch):
    from propensity.pipelines.engines import EngineConfig

    monkeypatch.delenv("MY_WAREHOUSE_URL", raising=False)
    with pytest.raises(ValueError, match=r"reads its connection URL from \$MY_WAREHOUSE_URL, which is not set"):
        open_tables(EngineConfig(engine="postgres", url_env="MY_WAREHOUSE_URL"))
    monkeypatch.setenv("MY_WAREHOUSE_URL", "mysql://u:p@localhost/db")
    with pytest.raises(ValueError, match=r"holds a mysql URL \(mysql://\*\*\*@localhost/db\), but the engine is postgres"):
        open_tables(EngineConfig(engine="postgres", url_env="MY_WAREHOUSE_URL"))
    # the snowflake connector is not installed here (nor in CI): the error says what to install
    try:
        import snowflake.connector  # noqa: F401
        pytest.skip("snowflake-connector-python is installed here")
    except ImportError:
        pass
    monkeypatch.setenv("MY_WAREHOUSE_URL", "snowflake://u:p@account/db/schema")
    with pytest.raises(ValueError, match=r"the snowflake engine needs its Ibis backend and driver: pip install 'ibis-framework\[snowflake\]'"):
        open_tables(EngineConfig(engine="snowflake", url_env="MY_WAREHOUSE_URL"))


def test_a_connection_failure_never_shows_the_password(monkeypatch, capsys, tmp_path):
    pytest.importorskip("psycopg", reason="the postgres extra is not installed (pip install 'propensity[postgres]')")
    import socket

    from propensity.pipelines.cli import main

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    secret = "hunter2-Very-Secret"
    monkeypatch.setenv("PROPENSITY_ENGINE_URL", f"postgresql://scorer:{secret}@127.0.0.1:{port}/db?password={secret}")
    ws = str(tmp_path / "ws")
    assert main(["-w", ws, "engine", "load", "--engine", "postgres"]) == 2  # no events: refused before connecting
    assert main(["-w", ws, "features", "--engine", "postgres", "--as-of", "2025-01-01"]) == 2
    out = capsys.readouterr()
    text = out.out + out.err
    assert "cannot connect the postgres engine" in text and "***" in text
    assert secret not in text


def test_sources_map_the_users_column_names_onto_the_canonical_ones(tmp_path):
    from propensity.features.build import build_features
    from propensity.features.config import FeatureConfig
    from propensity.features.spine import spine_at
    from propensity.pipelines.engines import EngineConfig

    events = pd.DataFrame({"user": ["a", "a", "b"], "name": ["open", "click", "open"],
                           "occurred_at": pd.to_datetime(["2025-01-01", "2025-01-03", "2025-01-02"]),
                           "value": [1.0, 1.0, 1.0]})
    events.to_parquet(tmp_path / "mine.parquet")
    events.rename(columns={"user": "contact_id", "name": "event_type", "occurred_at": "ts"}).to_parquet(tmp_path / "canonical.parquet")

    def features(source):
        tables = open_tables(EngineConfig.model_validate({"engine": "duckdb", "sources": {"events": source}}))
        config = FeatureConfig(windows_days=(7,), half_lives_days=(7.0,), account_features=False)
        frame = build_features(tables.events, spine_at(tables.events, "2025-01-05"), config).execute()
        return frame.sort_values("contact_id").reset_index(drop=True)

    mapped = features({"parquet": str(tmp_path / "mine.parquet"),
                       "columns": {"contact_id": "user", "event_type": "name", "ts": "occurred_at"}})
    assert mapped["all__count_7d"].sum() == 3
    pd.testing.assert_frame_equal(mapped, features({"parquet": str(tmp_path / "canonical.parquet")}))
    with pytest.raises(EngineConfigError, match=r"`columns` names column\(s\) \['when'\] it lacks"):
        features({"parquet": str(tmp_path / "mine.parquet"), "columns": {"contact_id": "user", "ts": "when"}})
    with pytest.raises(EngineConfigError, match=r"maps unknown canonical column\(s\) \['user_id'\]"):
        features({"parquet": str(tmp_path / "mine.parquet"), "columns": {"user_id": "user"}})


def test_engine_load_copies_into_another_ibis_backend_and_an_operation_it_lacks_is_named(tmp_path, monkeypatch,
                                                                                          capsys):
    """SQLite (Ibis' sqlite backend, no server): the load path other backends take (Ibis' insert, not
    PostgreSQL's COPY) copies every row; the feature build then stops at the first operation SQLite's
    compiler lacks, with a message instead of a traceback."""
    import ibis

    from propensity.features.store import Workspace, ingest_file
    from propensity.pipelines.cli import main
    from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world

    paths = write_world(generate_world(WorldConfig(contacts=60, days=30, seed=2)), tmp_path / "data")
    ws = Workspace(tmp_path / "ws")
    for kind in ("contacts", "events", "outcomes"):
        ingest_file(ws, kind, paths[kind])
    monkeypatch.setenv("PROPENSITY_ENGINE_URL", f"sqlite:///{tmp_path / 'copy.sqlite'}")
    assert main(["-w", str(ws.path), "engine", "load", "--engine", "sqlite"]) == 0
    copy = ibis.sqlite.connect(tmp_path / "copy.sqlite")
    for kind in ("events", "contacts", "outcomes"):
        mine = ws.table(kind).sort_values(ws.table(kind).columns[0], kind="stable").reset_index(drop=True)
        theirs = copy.table(kind).execute().sort_values(mine.columns[0], kind="stable").reset_index(drop=True)
        assert len(theirs) == len(mine) > 0
        pd.testing.assert_frame_equal(theirs, mine, check_dtype=False)
    assert main(["-w", str(ws.path), "features", "--engine", "sqlite", "--as-of", "2025-01-20"]) == 2
    assert "the engine cannot run an operation the features or rules use" in capsys.readouterr().err
