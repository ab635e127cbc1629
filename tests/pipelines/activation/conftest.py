"""Real local HTTP receivers and a real SQLite (WAL) database for the activation tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa

from propensity.pipelines.activation.tables import create_activation_tables, metadata
from propensity.pipelines.serve.db import database_url, make_engine
from tests.pipelines.serve.support import fresh_postgres_database



@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self):
        return json.loads(self.body)


Reply = tuple[int, dict[str, str], bytes]


class Receiver:
    """An HTTP server in a thread that records every request and answers as told.

    ``replies`` are used one per request, in order, then ``default``; ``rule`` (when set) decides
    instead, from the request and how many came before it.
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.replies: list[Reply] = []
        self.default: Reply = (200, {}, b'{"ok": true}')
        self.rule: Callable[[Received, int], Reply] | None = None
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                   self.rfile.read(length))
                with receiver._lock:
                    index = len(receiver.received)
                    receiver.received.append(request)
                    if receiver.rule is not None:
                        status, headers, body = receiver.rule(request, index)
                    elif receiver.replies:
                        status, headers, body = receiver.replies.pop(0)
                    else:
                        status, headers, body = receiver.default
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_PUT = _handle

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def postgres_server(postgres_url) -> Iterator[str]:
    """A database of its own on the session's PostgreSQL server (tests/conftest.py), emptied by each
    test: under pytest-xdist every worker has its own session, so workers never truncate each other's
    tables."""
    with fresh_postgres_database(postgres_url) as url:
        yield url


def _fresh(url: str) -> sa.Engine:
    engine = make_engine(url)
    metadata.drop_all(engine)  # one PostgreSQL database serves every test of a worker: start each from empty
    create_activation_tables(engine)
    return engine


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def engine(request, tmp_path) -> Iterator[sa.Engine]:
    """The service database with fresh activation tables: SQLite (WAL), and a real PostgreSQL."""
    if request.param == "sqlite":
        engine = _fresh(database_url(tmp_path, env={}))
    else:
        engine = _fresh(database_url(tmp_path, env={"DATABASE_URL": request.getfixturevalue("postgres_server")}))
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_db(tmp_path) -> Iterator[sa.Engine]:
    """The service database on SQLite only (for tests whose SQL is covered on both by others)."""
    engine = _fresh(database_url(tmp_path, env={}))
    yield engine
    engine.dispose()
