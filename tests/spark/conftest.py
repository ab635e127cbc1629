"""One Spark session (local[2]) and one small synthetic workspace for every Spark test.

A session takes 5-6 s to start on an idle machine, so it is shared by the whole test session.
Without pyspark or Java the tests are skipped with the reason.
"""

import shutil
from pathlib import Path

import pytest

from propensity.features.store import Workspace, ingest_file
from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world


@pytest.fixture(scope="session")
def spark():
    pytest.importorskip("pyspark", reason="the spark extra is not installed (pip install 'propensity[spark]')")
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java (17) on the PATH")
    from propensity.pipelines.engines import SparkSection, spark_session

    session = spark_session(SparkSection(master="local[2]"))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def world_ws(tmp_path_factory) -> tuple[Workspace, object]:
    """A workspace holding a small synthetic world: events, contacts (with accounts), outcomes."""
    root: Path = tmp_path_factory.mktemp("spark-world")
    world = generate_world(WorldConfig(contacts=500, days=150, seed=11))
    paths = write_world(world, root / "data")
    ws = Workspace(root / "ws")
    for kind in ("contacts", "events", "outcomes"):
        ingest_file(ws, kind, paths[kind])
    return ws, world


@pytest.fixture(scope="session")
def spark_tables(spark, world_ws):
    from propensity.pipelines.engines import EngineConfig, open_tables

    ws, _ = world_ws
    return open_tables(EngineConfig(engine="spark"), ws, session=spark)
