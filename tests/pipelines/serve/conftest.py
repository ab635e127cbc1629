"""Fixtures for the service: a real PostgreSQL server (and a fresh database per test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pipelines.serve.support import fresh_postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database_url(request, tmp_path) -> Iterator[str]:
    """The service database, once on SQLite and once on a real PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'serve.db'}"
        return
    server = request.getfixturevalue("postgres_url")
    with fresh_postgres_database(server) as url:
        yield url
