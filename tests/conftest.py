"""Settings for the whole test session (collected before any test module imports lightgbm)."""

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# LightGBM's OpenMP threads spin while they wait unless told otherwise; on a busy 2-core machine
# that made a small fit many times slower (the CLI sets the same in propensity.pipelines.cli.main). It only
# takes effect if set before lightgbm is first imported, hence here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PG_SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "postgres.sh"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One PostgreSQL server per test session: $PROPENSITY_TEST_DATABASE_URL (what .ci/run starts),
    else a throwaway cluster from .ci/postgres.sh; skipped with the reason when none can start."""
    given = os.environ.get("PROPENSITY_TEST_DATABASE_URL")
    if given:
        yield given
        return
    folder = tempfile.mkdtemp(prefix="propensity-pg.", dir="/tmp")
    started = subprocess.run(
        ["bash", str(PG_SCRIPT), "start", folder],
        capture_output=True, text=True, env={**os.environ, "PROPENSITY_PG_INSTALL": "0"}, timeout=120,
    )
    if started.returncode != 0:
        subprocess.run(["bash", str(PG_SCRIPT), "stop", folder], capture_output=True, timeout=60)
        pytest.skip(f"no PostgreSQL server could be started: {started.stderr.strip()[-300:]}")
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(PG_SCRIPT), "stop", folder], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """The session's one small trained world (tests/worlds.py): a workspace, its train config and a
    registered model; shared by every test that needs a trained model but not a particular one."""
    from tests.worlds import trained_world

    return trained_world(tmp_path_factory)
