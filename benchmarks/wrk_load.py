"""wrk as the service benchmarks' load generator: a Lua script that writes Segment calls.

wrk (C, epoll; Debian package ``wrk``) sends the load from its own process, so the figure is the
server's and not a Python client's: with the httpx client this benchmark used before, the client
took more CPU than the server and capped ``track`` at ~360 requests/s.

Each request carries fresh ``messageId``s (the run's id, wrk's thread number and a counter), a
random ``userId`` among ``contacts`` and a timestamp up to 30 days back. wrk is a closed loop: each
connection sends its next request when the previous one is answered, so this measures capacity
and the latency at that concurrency.

With ``record`` (the crash run) each wrk thread has ONE connection, so requests and responses
alternate strictly in that thread, and the thread writes every body it sends and the message ids
of every 200 it gets to files of its own: after a SIGKILL the benchmark knows exactly what was
acknowledged (to check for losses) and what to resend (as SDKs retry).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = ["run_wrk", "wrk_path", "write_script"]

TYPES = [("page_view", ',"properties":{"path":"/pricing"}'), ("page_view", ',"properties":{"path":"/docs"}'),
         ("feature_used", ""), ("email_open", ""), ("email_click", ""), ("trial_started", ""),
         ("demo_requested", ""), ("webinar_attended", "")]

_SCRIPT = r"""
-- written by benchmarks/wrk_load.py
local path, batch, contacts, now, run = "%(path)s", %(batch)d, %(contacts)d, %(now)d, "%(run)s"
local auth = "Basic %(auth)s"
local record_dir = %(record_dir)s
local types = {%(types)s}
local counter, prefix, last_ids = 0, "", {}
local sent_file, acked_file = nil, nil
local next_tid = 0

function setup(thread)
  next_tid = next_tid + 1
  thread:set("tid", next_tid)
end

function init(args)
  prefix = run .. "-" .. tid .. "-"
  math.randomseed(tid * 7919 + %(seed)d)
  if record_dir then
    sent_file = io.open(record_dir .. "/sent-" .. tid, "w")
    acked_file = io.open(record_dir .. "/acked-" .. tid, "w")
  end
end

local function call()
  counter = counter + 1
  local id = prefix .. counter
  local t = types[math.random(#types)]
  local ts = os.date("!%%Y-%%m-%%dT%%H:%%M:%%SZ", now - math.random(1, 2592000))
  return id, '{"type":"track","userId":"c' .. (math.random(contacts) - 1) .. '","event":"' .. t[1]
    .. '","messageId":"' .. id .. '","timestamp":"' .. ts .. '"' .. t[2] .. '}'
end

function request()
  local body
  last_ids = {}
  if batch == 0 then
    local id
    id, body = call()
    last_ids[1] = id
  else
    local calls = {}
    for i = 1, batch do
      last_ids[i], calls[i] = call()
    end
    body = '{"batch":[' .. table.concat(calls, ",") .. ']}'
  end
  if sent_file then sent_file:write(body, "\n"); sent_file:flush() end
  return wrk.format("POST", path, {["Content-Type"] = "application/json", ["Authorization"] = auth}, body)
end
%(response)s
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,'
    .. '"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d,"mean_us":%%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""

_RESPONSE = r"""
function response(status, headers, body)
  if acked_file and status == 200 then acked_file:write(table.concat(last_ids, "\n"), "\n"); acked_file:flush() end
end
"""


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (Debian/Ubuntu), brew install wrk (macOS)")
    return found


def write_script(folder: Path, *, path: str, batch: int, contacts: int, auth_b64: str, seed: int = 0,
                 record_dir: Path | None = None) -> Path:
    """The Lua script for one load shape: ``batch`` 0 posts single calls, else ``{"batch": [...]}``."""
    types = ",".join(f'{{"{t}", {json.dumps(extra)}}}' for t, extra in TYPES)
    text = _SCRIPT % {
        "path": path, "batch": batch, "contacts": contacts, "now": int(time.time()),
        "run": uuid.uuid4().hex[:8], "auth": auth_b64, "types": types, "seed": seed,
        "record_dir": json.dumps(str(record_dir)) if record_dir else "nil",
        "response": _RESPONSE if record_dir else "",
    }
    script = folder / f"load-{uuid.uuid4().hex[:6]}.lua"
    script.write_text(text)
    return script


def run_wrk(url: str, script: Path, *, connections: int, threads: int, seconds: float,
            timeout_s: float = 10.0) -> dict[str, Any]:
    """Run wrk for ``seconds``; its summary (requests, errors by kind, latency percentiles in us)."""
    cmd = [wrk_path(), "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
           "--timeout", f"{timeout_s:g}s", "-s", str(script), url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr[-1000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    summary["ok"] = summary["requests"] - summary["status"]
    return summary


def popen_wrk(url: str, script: Path, *, connections: int, threads: int, seconds: float) -> subprocess.Popen:
    """wrk in the background (the crash run kills the server under it)."""
    cmd = [wrk_path(), "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
           "--timeout", "5s", "-s", str(script), url]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
