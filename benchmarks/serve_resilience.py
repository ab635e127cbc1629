"""The poison, memory and sweep runs of ``benchmarks/serve_bench.py`` (issue 15).

Each run starts the real CLI (``propensity serve``) in its own process, as the load runs do, and
drives it from this process over loopback:

- **poison**: closed-loop load of good ``track`` calls with bad requests mixed in (ids too long,
  of the wrong type or with a NUL, ``timestamp: true``, NaN, nesting 40 and 100,000 deep, a body
  that is not JSON, a wrong key), with triggers on and a group-commit delay so that bad and good
  requests share commits. Every good request must be acknowledged, every bad one answered 4xx,
  and the store must hold exactly the acknowledged events (0 lost, 0 bad stored).
- **memory**: ``--memory-contacts`` distinct ``userId``s (batches of 500 new contacts), the
  server's RSS sampled as they arrive, with the default ``cache_contacts`` bound.
- **sweep**: on that store, every scored contact made due at once (what the first sweep after
  migrating a store from before ``next_due`` does), then an open-loop ingest load while the sweep
  runs (``sweep_seconds: 2``): ingest p50/p99 during the sweep and outside it, the sweep's length
  and contacts per second; then a steady-state sweep (how many contacts one sweep looks at).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

KEY = "bench-key"
GOOD_EVENTS = [("page_view", {"path": "/pricing"}), ("feature_used", None), ("trial_started", None),
               ("demo_requested", None), ("email_open", None)]


def _ts(now: datetime, rng: random.Random) -> str:
    return (now - timedelta(seconds=rng.uniform(1, 30 * 86_400))).isoformat() + "Z"


def _good(rng: random.Random, contacts: int, now: datetime) -> dict[str, Any]:
    event, props = rng.choice(GOOD_EVENTS)
    call = {"type": "track", "userId": f"c{rng.randrange(contacts)}", "event": event, "messageId": uuid.uuid4().hex,
            "timestamp": _ts(now, rng)}
    if props:
        call["properties"] = props
    return call


def _bad_cases(now: datetime) -> list[tuple[str, bytes, tuple[str, str]]]:
    """(case, raw body, auth) of requests that must be refused with a 4xx."""
    rng = random.Random(1)

    def track(**fields) -> dict:
        return {"type": "track", "userId": "c1", "event": "demo_requested", "timestamp": _ts(now, rng),
                "messageId": uuid.uuid4().hex, **fields}

    def raw(value: dict) -> bytes:
        return json.dumps(value).encode()

    deep = json.dumps(track(properties={"k": "x"}))
    return [
        ("userId over 256 characters", raw(track(userId="x" * 300)), (KEY, "")),
        ("userId an object", raw(track(userId={"id": 1})), (KEY, "")),
        ("userId with a NUL", raw(track(userId="c\x001")), (KEY, "")),
        ("timestamp true", raw(track(timestamp=True)), (KEY, "")),
        ("NaN in properties", raw(track(properties={"v": 1})).replace(b'"v": 1', b'"v": NaN'), (KEY, "")),
        ("nested 40 levels", deep.replace('"x"', "[" * 40 + "1" + "]" * 40).encode(), (KEY, "")),
        ("nested 100,000 levels", deep.replace('"x"', "[" * 100_000 + "1" + "]" * 100_000).encode(), (KEY, "")),
        ("not JSON", b"{not json", (KEY, "")),
        ("unknown write key", raw(track()), ("stolen", "")),
    ]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return round(ordered[rank] * 1000, 2)


# --------------------------------------------------------------------------- poison


async def _poison_load(base: str, args, now: datetime) -> dict[str, Any]:
    rng = random.Random(args.seed)
    bad = _bad_cases(now)
    good_ok: list[str] = []
    counts = {"good_sent": 0, "good_acked": 0, "good_failed": 0, "bad_sent": 0, "bad_4xx": 0, "bad_other": 0}
    by_case: dict[str, dict[str, int]] = {case: {} for case, _, _ in bad}
    latencies: list[float] = []
    stop_at = time.perf_counter() + args.poison_seconds

    async def worker(client: httpx.AsyncClient, index: int) -> None:
        n = 0
        while time.perf_counter() < stop_at:
            n += 1
            if n % args.bad_every == 0:
                case, body, auth = bad[(index + n) % len(bad)]
                counts["bad_sent"] += 1
                response = await client.post(f"{base}/v1/track", content=body, auth=auth,
                                             headers={"Content-Type": "application/json"})
                ok = 400 <= response.status_code < 500
                counts["bad_4xx" if ok else "bad_other"] += 1
                by_case[case][str(response.status_code)] = by_case[case].get(str(response.status_code), 0) + 1
                continue
            call = _good(rng, args.contacts, now)
            counts["good_sent"] += 1
            t0 = time.perf_counter()
            try:
                response = await client.post(f"{base}/v1/track", json=call, auth=(KEY, ""))
                acked = response.status_code == 200
            except httpx.HTTPError:
                acked = False
            latencies.append(time.perf_counter() - t0)
            if acked:
                counts["good_acked"] += 1
                good_ok.append(call["messageId"])
            else:
                counts["good_failed"] += 1

    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(worker(client, i) for i in range(args.connections)))
    return {**counts, "by_case": by_case, "acked_ids": good_ok, "p50_ms": _percentile(latencies, 50),
            "p99_ms": _percentile(latencies, 99)}


def run_poison(bench, backend, args) -> dict[str, Any]:
    workspace, url = backend.fresh(args.workdir)
    config = workspace / "serve.yaml"
    config.write_text("commit_delay_ms: 20\n")  # bad and good requests share group commits
    port = bench._free_port()
    base = f"http://127.0.0.1:{port}"
    server = bench._start_server(workspace, port, url,
                                 extra=["--triggers", str(bench.ROOT / "configs" / "triggers.yaml"),
                                        "--config", str(config)])
    load_before = os.getloadavg()
    try:
        bench._wait_healthy(base, server)
        result = asyncio.run(_poison_load(base, args, datetime.now(UTC).replace(tzinfo=None)))
    finally:
        server.terminate()
        server.wait(30)
    stored = backend.stored(workspace, url)
    acked = result.pop("acked_ids")
    row = {
        "backend": backend.name, "seconds": args.poison_seconds, "connections": args.connections,
        "bad_every": args.bad_every, **{k: v for k, v in result.items()},
        "lost": sum(1 for m in acked if m not in stored),
        "stored_not_acknowledged": len(set(stored) - set(acked)),
        "doubled": sum(1 for n in stored.values() if n > 1),
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    row["held"] = (row["good_failed"] == 0 and row["bad_other"] == 0 and row["lost"] == 0
                   and row["stored_not_acknowledged"] == 0 and row["doubled"] == 0)
    print(f"poison {backend.name}: {row['good_acked']:,}/{row['good_sent']:,} good acknowledged, "
          f"{row['bad_4xx']:,}/{row['bad_sent']:,} bad answered 4xx, lost {row['lost']}, "
          f"bad stored {row['stored_not_acknowledged']}, doubled {row['doubled']}, good p99 {row['p99_ms']} ms"
          f"  -> {'held' if row['held'] else 'FAILED'}")
    return row


# --------------------------------------------------------------------------- memory


async def _distinct_contacts(base: str, pid: int, total: int, batch: int, connections: int,
                             checkpoints: list[int], now: datetime) -> tuple[list[dict], int]:
    rng = random.Random(5)
    samples: list[dict] = []
    next_contact = 0
    errors = 0
    started = time.perf_counter()
    lock = asyncio.Lock()
    marks = list(checkpoints)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_contact, errors
        while True:
            async with lock:
                first = next_contact
                if first >= total:
                    return
                next_contact = min(total, first + batch)
            calls = [{"type": "track", "userId": f"c{i}", "event": rng.choice(GOOD_EVENTS)[0],
                      "messageId": f"m{i}", "timestamp": _ts(now, rng)} for i in range(first, next_contact)]
            response = await client.post(f"{base}/v1/batch", json={"batch": calls}, auth=(KEY, ""))
            if response.status_code != 200:
                errors += 1
            async with lock:
                while marks and next_contact >= marks[0]:
                    samples.append({"contacts": marks.pop(0), "rss_mb": round(_rss_mb(pid), 1),
                                    "seconds": round(time.perf_counter() - started, 1)})

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(connections)))
    return samples, errors


def run_memory(bench, backend, args) -> tuple[dict[str, Any], tuple[Path, str | None]]:
    """1M distinct contacts; returns the row and the store (the sweep run reuses it)."""
    workspace, url = backend.fresh(args.workdir)
    port = bench._free_port()
    base = f"http://127.0.0.1:{port}"
    server = bench._start_server(workspace, port, url)
    total = args.memory_contacts
    step = max(total // 10, 1)
    load_before = os.getloadavg()
    try:
        bench._wait_healthy(base, server)
        idle = _rss_mb(server.pid)
        samples, errors = asyncio.run(_distinct_contacts(
            base, server.pid, total, 500, 4, list(range(step, total + 1, step)),
            datetime.now(UTC).replace(tzinfo=None)))
        metrics = httpx.get(f"{base}/metrics", auth=(KEY, ""), timeout=30).text
    finally:
        server.terminate()
        server.wait(60)
    cache = _metric(metrics, "propensity_contact_cache_size")
    capacity = _metric(metrics, "propensity_contact_cache_capacity")
    evictions = _metric(metrics, "propensity_contact_cache_evictions_total")
    final = samples[-1]["rss_mb"] if samples else None
    row = {
        "backend": backend.name, "contacts": total, "events": total, "errors": errors,
        "rss_idle_mb": round(idle, 1), "rss_mb": samples, "rss_final_mb": final,
        "rss_mb_per_million_contacts": round((final - idle) / total * 1e6, 1) if final else None,
        "cache_size": cache, "cache_capacity": capacity, "cache_evictions": evictions,
        "seconds": samples[-1]["seconds"] if samples else None,
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    shown = ", ".join(f"{s['contacts'] // 1000}k {s['rss_mb']:.0f}" for s in samples)
    print(f"memory {backend.name}: store {workspace}" + (f" {url}" if url else ""))
    print(f"memory {backend.name}: RSS idle {idle:.0f} MB; by contacts (MB): {shown}; cache {cache:,.0f} of "
          f"{capacity:,.0f}, {evictions:,.0f} evicted; {row['seconds']} s, {errors} errors")
    return row, (workspace, url)


# --------------------------------------------------------------------------- sweep


class _Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: ``POST`` a body, read the answer.

    The sweep run's load generator. httpx costs ~1-2 ms of client CPU a request: on this 2-core
    machine under load the client, not the server, capped the offered rate (the server's writer
    sat idle while 32 connections waited in the client); bytes written by hand cost a fraction.
    """

    def __init__(self, host: str, port: int, auth: str) -> None:
        self.host, self.port, self.auth = host, port, auth
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Basic {self.auth}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        self.writer.write(head.encode() + body)
        try:
            status_line = await self.reader.readline()
            length = 0
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await self.reader.readexactly(length)
            return int(status_line.split()[1])
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            self.writer.close()
            self.reader = self.writer = None
            raise


async def _sweep_load(base: str, rate: float, seconds: float, contacts: int, now: datetime,
                      connections: int = 8) -> tuple[list[tuple[float, float]], list[tuple[float, float]], int]:
    """Open-loop track calls at ``rate``/s; (send wall time, latency) pairs; metrics polled meanwhile."""
    import base64

    rng = random.Random(9)
    timeline: list[tuple[float, float]] = []
    swept: list[tuple[float, float]] = []
    errors = 0
    host, port = base.removeprefix("http://").split(":")
    auth = base64.b64encode(f"{KEY}:".encode()).decode()
    start = time.perf_counter()
    wall0 = time.time()
    interval = connections / rate
    stop_at = start + seconds

    async def worker(index: int) -> None:
        nonlocal errors
        conn = _Connection(host, int(port), auth)
        scheduled = start + index * interval / connections
        while scheduled < stop_at:
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                if await conn.post("/v1/track", json.dumps(_good(rng, contacts, now)).encode()) != 200:
                    errors += 1
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                errors += 1
            timeline.append((wall0 + (scheduled - start), time.perf_counter() - scheduled))
            scheduled += interval
        if conn.writer is not None:
            conn.writer.close()

    async def poll(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop_at:
            text = (await client.get(f"{base}/metrics", auth=(KEY, ""))).text
            swept.append((time.time(), _metric(text, "propensity_sweep_contacts_total") or 0.0))
            await asyncio.sleep(0.25)

    async with httpx.AsyncClient(timeout=120) as client:
        await asyncio.gather(poll(client), *(worker(i) for i in range(connections)))
    return timeline, swept, errors


def run_sweep(bench, backend, store: tuple[Path, str | None], args, made_due: int | None,
              seconds: float) -> dict[str, Any]:
    """Ingest at ``--sweep-rate`` for ``seconds`` while sweeps run every 2 s; ``made_due`` scored
    contacts are made due first (None: all of them, as after migrating a store from before
    next_due; 0: the steady state, only what came due by itself)."""
    import sqlalchemy as sa

    workspace, url = store
    engine = sa.create_engine(url or f"sqlite:///{workspace / 'serve.db'}")
    with engine.begin() as conn:
        scored = conn.execute(sa.text("SELECT count(*) FROM score_state WHERE points != 0")).scalar()
        already = conn.execute(sa.text("SELECT count(*) FROM score_state WHERE next_due <= :now"),
                               {"now": datetime.now(UTC).replace(tzinfo=None)}).scalar()
        if made_due is None or made_due > 0:
            limit = "" if made_due is None else f" LIMIT {int(made_due)}"
            conn.execute(sa.text("UPDATE score_state SET next_due = scored_at WHERE contact_id IN "
                                 f"(SELECT contact_id FROM score_state WHERE points != 0{limit})"))
    engine.dispose()
    config = workspace / "sweep.yaml"
    tuning = "".join(f"{k}: {v}\n" for k, v in (("sweep_chunk", args.sweep_chunk), ("sweep_duty", args.sweep_duty))
                     if v is not None)
    config.write_text("sweep_seconds: 2\n" + tuning)
    port = bench._free_port()
    base = f"http://127.0.0.1:{port}"
    server = bench._start_server(workspace, port, url, extra=["--config", str(config)])
    load_before = os.getloadavg()
    try:
        bench._wait_healthy(base, server)
        timeline, swept, errors = asyncio.run(_sweep_load(
            base, args.sweep_rate, seconds, args.memory_contacts, datetime.now(UTC).replace(tzinfo=None),
            args.sweep_connections))
        steady = []
        for _ in range(3):  # steady state: what one sweep looks at once the backlog is done
            before = _metric(httpx.get(f"{base}/metrics", auth=(KEY, "")).text, "propensity_sweep_contacts_total")
            time.sleep(2.5)
            after = _metric(httpx.get(f"{base}/metrics", auth=(KEY, "")).text, "propensity_sweep_contacts_total")
            steady.append((after or 0) - (before or 0))
    finally:
        server.terminate()
        server.wait(60)
    moving = [t for (t, n), (_, m) in zip(swept, swept[1:]) if m > n]
    during = [lat for t, lat in timeline if moving and moving[0] <= t <= moving[-1]]
    outside = [lat for t, lat in timeline if not moving or t < moving[0] or t > moving[-1]]
    looked = swept[-1][1] if swept else 0
    sweep_s = round(moving[-1] - moving[0] + 0.25, 1) if moving else None
    row = {
        "backend": backend.name, "sweep_chunk": args.sweep_chunk or "default", "sweep_duty": args.sweep_duty or "default",
        "scored_contacts": scored, "due_by_itself": already,
        "made_due": scored if made_due is None else made_due, "swept_contacts": looked, "ingest_seconds": seconds,
        "sweep_seconds": sweep_s, "contacts_per_s": round(looked / sweep_s) if sweep_s else None,
        "offered_events_per_s": args.sweep_rate, "connections": args.sweep_connections,
        "requests": len(timeline), "errors": errors,
        "during_sweep": {"requests": len(during), "p50_ms": _percentile(during, 50), "p99_ms": _percentile(during, 99),
                         "max_ms": _percentile(during, 100)},
        "outside_sweep": {"requests": len(outside), "p50_ms": _percentile(outside, 50),
                          "p99_ms": _percentile(outside, 99)},
        "steady_contacts_per_sweep": steady,
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"sweep {backend.name}: {scored:,} scored contacts, {row['made_due']:,} made due ({already:,} due by "
          f"themselves); swept {looked:,.0f} in {sweep_s} s under "
          f"{args.sweep_rate:.0f} events/s of ingest: p50/p99 {row['during_sweep']['p50_ms']}/"
          f"{row['during_sweep']['p99_ms']} ms during the sweep ({len(during):,} requests), "
          f"{row['outside_sweep']['p50_ms']}/{row['outside_sweep']['p99_ms']} ms outside; {errors} errors; "
          f"steady state {steady} contacts per sweep")
    return row
