"""Engine configs: the shipped ones load, mistakes fail naming the file and key (no Spark needed)."""

from pathlib import Path

import pandas as pd
import pytest

from propensity.pipelines.engines import EngineConfigError, load_engine_config, open_tables, spark_master

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "engines"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_engine_configs_load(path):
    config = load_engine_config(path)
    assert config.engine in ("duckdb", "spark") and config.sources.events is not None


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
