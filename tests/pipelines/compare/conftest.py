"""The compare tests run on the session's one trained world (tests/worlds.py, the ``world`` fixture)."""

import pytest


@pytest.fixture(scope="session")
def trained_workspace(world):
    """``(workspace, train config path, TrainResult)`` of the session's trained world."""
    return world.ws, world.config_path, world.result
