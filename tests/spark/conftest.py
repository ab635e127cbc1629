"""One Spark session (local[2]), one PostgreSQL database and one small synthetic workspace for
every engine test.

A session takes 5-6 s to start on an idle machine, so it is shared by the whole test session.
Without pyspark or Java the Spark tests are skipped with the reason; without a PostgreSQL server
(or the postgres extra) the PostgreSQL ones.
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


# The parity suite runs the same expressions on each engine against DuckDB: Spark, and PostgreSQL
# (the server of $PROPENSITY_TEST_DATABASE_URL, else one .ci/postgres.sh starts; skipped with the
# reason when neither is there). The PostgreSQL tables are copied in by `propensity engine load`'s code.
PARITY_URL_ENV = "PROPENSITY_TEST_PARITY_ENGINE_URL"


@pytest.fixture(scope="session")
def postgres_engine_url(postgres_url, world_ws):
    """A fresh database holding the world's events, contacts and outcomes (loaded as users load theirs);
    its URL is in ``$PROPENSITY_TEST_PARITY_ENGINE_URL`` for the session."""
    import os

    pytest.importorskip("psycopg", reason="the postgres extra is not installed (pip install 'propensity[postgres]')")
    from propensity.pipelines.engines import EngineConfig, load_into_engine
    from tests.pipelines.serve.support import fresh_postgres_database

    ws, _ = world_ws
    with fresh_postgres_database(postgres_url) as url:
        os.environ[PARITY_URL_ENV] = url
        try:
            load_into_engine(ws, EngineConfig(engine="postgres", url_env=PARITY_URL_ENV))
            yield url
        finally:
            os.environ.pop(PARITY_URL_ENV, None)


@pytest.fixture(scope="session")
def postgres_tables(postgres_engine_url):
    from propensity.pipelines.engines import EngineConfig, open_tables

    tables = open_tables(EngineConfig(engine="postgres", url_env=PARITY_URL_ENV))
    yield tables
    tables.con.disconnect()


@pytest.fixture(scope="session", params=["spark", "postgres"])
def engine_tables(request):
    """Each engine's tables of the same world (``spark_tables``, ``postgres_tables``)."""
    return request.getfixturevalue(f"{request.param}_tables")
