"""No acknowledged event is lost or doubled when the server is SIGKILLed while clients send."""

from __future__ import annotations

import base64
import json
import os
import shutil
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


# wrk at full rate beside the recorded senders: one-event calls with fresh ids for contacts of
# their own, as many as the server takes (issue 14's rates), so the kill lands mid group commit
_WRK_SCRIPT = """
local n, tid = 0, 0
local auth = "Basic %s"
function setup(thread) tid = tid + 1; thread:set("tid", tid) end
function request()
  n = n + 1
  local body = '{"type":"track","userId":"w' .. (n %% 97) .. '","event":"page_view","messageId":"w' .. tid .. '-' .. n
    .. '","timestamp":"%s"}'
  return wrk.format("POST", "/v1/track", {["Content-Type"] = "application/json", ["Authorization"] = auth}, body)
end
"""


def _hammered(workspace) -> int:
    """Events the full-rate load has stored so far (read beside the writer: SQLite WAL)."""
    engine = sa.create_engine(f"sqlite:///{workspace / 'serve.db'}")
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM events WHERE contact_id LIKE 'w%'")).scalar()
    except sa.exc.OperationalError:
        return 0
    finally:
        engine.dispose()


def _wrk(tmp_path, base: str, now: datetime) -> subprocess.Popen:
    script = tmp_path / "hammer.lua"
    auth = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    script.write_text(_WRK_SCRIPT % (auth, (now - timedelta(hours=1)).isoformat() + "Z"))
    return subprocess.Popen([shutil.which("wrk"), "-t2", "-c32", "-d30s", "--timeout", "5s", "-s", str(script),
                             f"{base}/v1/track"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("full_rate", [False, pytest.param(True, marks=pytest.mark.skipif(
    shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk) for the full-rate load"))])
def test_sigkill_under_load_loses_and_doubles_no_acknowledged_event(tmp_path, full_rate):
    workspace = tmp_path / "ws"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start(workspace, port)
    hammer = None
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
        if full_rate:
            hammer = _wrk(tmp_path, base, now)
        threads = [threading.Thread(target=send, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(acked) < 600 and time.monotonic() < deadline:
            time.sleep(0.01)
        while full_rate and _hammered(workspace) < 3000 and time.monotonic() < deadline:
            time.sleep(0.05)  # let the full-rate load run a while: the kill lands among its commits
        server.send_signal(signal.SIGKILL)  # mid-stream: the senders are still sending
        server.wait(10)
        if hammer is not None:
            hammer.kill()
            hammer.wait(10)
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
        if hammer is not None and hammer.poll() is None:
            hammer.kill()

    engine = sa.create_engine(f"sqlite:///{workspace / 'serve.db'}")
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT event_id, count(*) FROM events GROUP BY event_id")).all()
        per_contact = dict(conn.execute(sa.text("SELECT contact_id, count(*) FROM events GROUP BY contact_id")).all())
        states = dict(conn.execute(sa.text("SELECT contact_id, state FROM score_state")).all())
    engine.dispose()
    counts = dict(stored)
    assert killed_with >= 100, "the kill came before any load"
    assert all(counts.get(m) == 1 for m in acked), "an acknowledged event was lost or doubled"
    assert max(counts.values()) == 1
    # the retry of an acknowledged batch stored nothing new
    for calls, body in zip(retried, redo):
        if calls[0]["messageId"] in acked_set:
            assert body["stored"] == 0 and body["duplicates"] == len(calls)
    assert sum(1 for m in counts if m.startswith("s")) == sum(len(c) for c in attempted)
    # the score state committed with the events: it counts exactly the stored events
    for c, body in scores.items():
        assert body["events"] == per_contact[f"c{c}"]
    # every contact's stored state (the full-rate ones too) counts exactly its stored events
    assert {c: json.loads(s)["events"] for c, s in states.items()} == per_contact
    if full_rate:
        assert sum(n for c, n in per_contact.items() if c.startswith("w")) > 1000, "wrk's load never arrived"
