"""`propensity features` on a Spark standalone cluster (a master and a worker on loopback).

Not ``local[N]``: the driver (the CLI process) runs the query on an executor in the worker's
JVM, so the shuffles, the file reads and the Parquet output go through a real cluster manager.
The features must be DuckDB's. Skipped, with the reason, when the cluster cannot start.
"""

import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from tests.spark.compare import assert_same_table

pytestmark = pytest.mark.slow
AS_OF = "2025-05-01"


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("pyspark", reason="the spark extra is not installed (pip install 'propensity[spark]')")
    from propensity.pipelines.spark.standalone import ClusterError, StandaloneCluster

    running = StandaloneCluster(cores=2, memory="1g")
    try:
        running.start()
    except ClusterError as exc:
        pytest.skip(f"no standalone Spark cluster on loopback: {exc}")
    yield running
    running.stop()


def _features(ws, tmp_path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "propensity.pipelines.cli", "-w", str(ws.path), "features", "--as-of", AS_OF, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_features_on_a_standalone_cluster_equal_duckdb(cluster, world_ws, tmp_path):
    ws, _ = world_ws
    engine = tmp_path / "standalone.yaml"
    engine.write_text(yaml.safe_dump({"engine": "spark", "spark": {"master": cluster.url, "conf": cluster.driver_conf()}}))
    on_cluster = _features(ws, tmp_path, "--engine-config", str(engine), "--out", str(tmp_path / "spark_out"))
    assert on_cluster.returncode == 0, on_cluster.stderr[-3000:] + cluster.log_tail("worker")
    # the application ran on the worker's executor, not in a local master
    assert "app-" in cluster.log_tail("worker", chars=100_000), cluster.log_tail("worker")
    on_duckdb = _features(ws, tmp_path, "--engine", "duckdb", "--out", str(tmp_path / "duck.parquet"))
    assert on_duckdb.returncode == 0, on_duckdb.stderr[-3000:]

    expected = pd.read_parquet(tmp_path / "duck.parquet")
    actual = pd.read_parquet(tmp_path / "spark_out")[list(expected.columns)]
    assert len(expected) > 100 and expected["account__contacts"].gt(1).any()
    assert_same_table(expected, actual)
