"""No acknowledged event is lost or doubled when the server is SIGKILLed while clients send."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from tests.pipelines.serve.support import ROOT, WRITE_KEY, free_port

pytestmark = pytest.mark.slow
AUTH = (WRITE_KEY, "")
TYPES = ["page_view", "feature_used", "email_open", "trial_started", "demo_requested"]


def _start(workspace, port: int) -> subprocess.Popen:
    env = {**os.environ, "PROPENSITY_WRITE_KEYS": WRITE_KEY}
    env.pop("DATABASE_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "propensity.pipelines.cli", "-w", str(workspace), "serve", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _wait_healthy(base: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become healthy")


def _batch(sender: int, number: int, now: datetime) -> list[dict]:
    return [
        {"type": "track", "userId": f"c{(sender * 7 + i) % 23}", "event": TYPES[(number + i) % len(TYPES)],
         "messageId": f"s{sender}-b{number}-e{i}",
         "timestamp": (now - timedelta(hours=number % 50, minutes=i)).isoformat()}
        for i in range(10)
    ]


def test_sigkill_under_load_loses_and_doubles_no_acknowledged_event(tmp_path):
    workspace = tmp_path / "ws"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start(workspace, port)
    acked: list[str] = []
    attempted: list[list[dict]] = []
    lock = threading.Lock()
    stop = threading.Event()
    now = datetime.now(UTC).replace(tzinfo=None)

    def send(sender: int) -> None:
        with httpx.Client(auth=AUTH, timeout=10) as client:
            for number in range(100_000):
                if stop.is_set():
                    return
                calls = _batch(sender, number, now)
                with lock:
                    attempted.append(calls)
                try:
                    response = client.post(f"{base}/v1/batch", json={"batch": calls})
                except httpx.HTTPError:
                    return  # the server died mid-request: this batch is unacknowledged
                if response.status_code == 200:
                    with lock:
                        acked.extend(c["messageId"] for c in calls)

    try:
        _wait_healthy(base, server)
        threads = [threading.Thread(target=send, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(acked) < 600 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.send_signal(signal.SIGKILL)  # mid-stream: the senders are still sending
        server.wait(10)
        stop.set()
        for t in threads:
            t.join(15)
        killed_with = len(acked)
        server = _start(workspace, port)
        _wait_healthy(base, server)
        # clients retry what was not acknowledged (as Segment SDKs do), and some of what was
        acked_set = set(acked)
        unacked = [calls for calls in attempted if calls[0]["messageId"] not in acked_set]
        retried = unacked + [calls for calls in attempted if calls[0]["messageId"] in acked_set][:25]
        with httpx.Client(auth=AUTH, timeout=30) as client:
            redo = [client.post(f"{base}/v1/batch", json={"batch": calls}).json() for calls in retried]
            as_of = (now + timedelta(days=1)).isoformat()
            scores = {c: client.get(f"{base}/v1/contacts/c{c}/score", params={"as_of": as_of}).json()
                      for c in range(23)}
    finally:
        server.kill()
        server.wait(10)

    engine = sa.create_engine(f"sqlite:///{workspace / 'serve.db'}")
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT event_id, count(*) FROM events GROUP BY event_id")).all()
        per_contact = dict(conn.execute(sa.text("SELECT contact_id, count(*) FROM events GROUP BY contact_id")).all())
    engine.dispose()
    counts = dict(stored)
    assert killed_with >= 100, "the kill came before any load"
    assert all(counts.get(m) == 1 for m in acked), "an acknowledged event was lost or doubled"
    assert max(counts.values()) == 1
    # the retry of an acknowledged batch stored nothing new
    for calls, body in zip(retried, redo):
        if calls[0]["messageId"] in acked_set:
            assert body["stored"] == 0 and body["duplicates"] == len(calls)
    assert len(counts) == sum(len(c) for c in attempted)
    # the score state committed with the events: it counts exactly the stored events
    for c, body in scores.items():
        assert body["events"] == per_contact[f"c{c}"]
