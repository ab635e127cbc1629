import pytest

from tests.pipelines.explain.world import trained_world


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    return trained_world(tmp_path_factory)
