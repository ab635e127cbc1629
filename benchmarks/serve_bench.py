"""Load and crash benchmark of ``propensity serve`` on loopback (SQLite and PostgreSQL).

Not a test. Run from the repository root::

    python benchmarks/serve_bench.py                       # SQLite + PostgreSQL, load + crash
    python benchmarks/serve_bench.py --only sqlite         # one backend
    python benchmarks/serve_bench.py --seconds 20 --connections 32
    python benchmarks/serve_bench.py --only sqlite --no-crash --models none,champion   # + learned score

The server is the real CLI (``python -m propensity.pipelines.cli serve``) in its own process, with the
shipped SaaS rules; the store is a fresh ``serve.db`` (SQLite, WAL, synchronous=FULL) or a fresh
database on a PostgreSQL server (``--database-url``, else ``$PROPENSITY_TEST_DATABASE_URL``, else
a throwaway cluster started by ``.ci/postgres.sh``; fsync on, default settings).

Load: a separate client process (httpx, asyncio, ``--connections`` keep-alive connections, closed
loop: each connection sends its next request when the previous one is answered) posts Segment
calls for ``--contacts`` contacts for ``--seconds`` after ``--warmup`` seconds. A 200 comes back
only once the request's events are committed and the contacts rescored, and the body carries
the new score, so a request's latency IS the latency from request to updated score. Two shapes:
``track`` (one event per request, as a server-side integration would send) and ``batch`` (the
Segment SDKs' default, here ``--batch-size`` events per request).

Crash: the same load, SIGKILL of the server after ``--crash-after`` seconds, a restart, every
client batch resent (as SDKs retry), then: acknowledged events missing (lost) and any event
stored more than once (doubled), which must both be zero.

``--runs`` adds the runs of issue 15 (``benchmarks/serve_resilience.py``): ``poison`` (bad
requests mixed into the load: every good one acknowledged, every bad one 4xx, 0 lost),
``memory`` (``--memory-contacts`` distinct contacts, 1M by default: the server's RSS as they
arrive, with the LRU bound) and ``sweep`` (every scored contact of that store due at once, ingest
p99 while the sweep runs)::

    python benchmarks/serve_bench.py --only sqlite --runs poison,memory,sweep \
        --results benchmarks/results/serve_bench_resilience.json

``--models none,champion`` repeats each load with a LightGBM champion registered in the
workspace (trained here on synthetic events of the same types), so the server also keeps the
event mirror and returns a learned score per rescored contact (one predict per commit); the
difference between the two rows is the learned score's cost per event.

Both processes share the machine's 2 cores with each other (and with whatever else runs):
load averages are recorded next to every figure. Results: a table on stdout and
``benchmarks/results/serve_bench.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serve_bench.json"
KEY = "bench-key"
TYPES = [("page_view", {"path": "/pricing"}), ("page_view", {"path": "/docs"}), ("feature_used", None),
         ("email_open", None), ("email_click", None), ("trial_started", None), ("demo_requested", None),
         ("webinar_attended", None)]


# --------------------------------------------------------------------------- the load client


def _call(rng: random.Random, contacts: int, now: datetime) -> dict[str, Any]:
    event, props = rng.choice(TYPES)
    call = {"type": "track", "userId": f"c{rng.randrange(contacts)}", "event": event,
            "messageId": uuid.uuid4().hex,
            "timestamp": (now - timedelta(seconds=rng.uniform(1, 30 * 86_400))).isoformat() + "Z"}
    if props:
        call["properties"] = props
    return call


async def _load(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    rng = random.Random(args.seed)
    now = datetime.now(UTC).replace(tzinfo=None)
    latencies: list[float] = []
    counts = {"requests": 0, "events": 0, "errors": 0}
    acked: list[str] = []
    sent: list[list[dict]] = []
    start = time.perf_counter()
    measure_from = start + args.warmup
    stop_at = measure_from + args.seconds

    # Open loop (--rate > 0): each connection sends on a fixed schedule, and latency counts from
    # the scheduled send time, so a server that falls behind is charged for the queue it causes
    # (no "coordinated omission"). Closed loop (--rate 0): each connection sends as fast as the
    # server answers; that measures capacity, and its latency is just concurrency / throughput.
    interval = args.connections * args.batch_size / args.rate if args.rate > 0 else 0.0

    async def worker(client: httpx.AsyncClient, index: int) -> None:
        scheduled = start + index * interval / max(args.connections, 1)
        while time.perf_counter() < stop_at:
            if interval:
                scheduled += interval
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            calls = [_call(rng, args.contacts, now) for _ in range(args.batch_size)]
            if args.shape == "track":
                url, body = f"{args.url}/v1/track", calls[0]
            else:
                url, body = f"{args.url}/v1/batch", {"batch": calls}
            if args.record:
                sent.append(calls)
            t0 = scheduled if interval else time.perf_counter()
            try:
                response = await client.post(url, json=body)
                ok = response.status_code == 200 and response.json()["scores"]
            except (httpx.HTTPError, ValueError):
                ok = False
                if args.record:  # the server is gone (crash run): stop this connection
                    return
            t1 = time.perf_counter()
            if ok and args.record:
                acked.extend(c["messageId"] for c in calls)
            if t0 >= measure_from and t1 <= stop_at:
                if ok:
                    latencies.append(t1 - t0)
                    counts["requests"] += 1
                    counts["events"] += len(calls)
                else:
                    counts["errors"] += 1

    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    async with httpx.AsyncClient(auth=(KEY, ""), timeout=30, limits=limits) as client:
        await asyncio.gather(*(worker(client, i) for i in range(args.connections)))
    out: dict[str, Any] = {**counts, "seconds": args.seconds, "latencies": latencies}
    if args.record:
        out.update(acked=acked, sent=sent)
    return out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


# --------------------------------------------------------------------------- the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(workspace: Path, port: int, database_url: str | None,
                  extra: list[str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PROPENSITY_WRITE_KEYS": KEY}
    env.pop("DATABASE_URL", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    return subprocess.Popen(
        [sys.executable, "-m", "propensity.pipelines.cli", "-w", str(workspace), "serve", "--port", str(port),
         *(extra or [])],
        # stderr to a file: an unread pipe fills up and then blocks the server on its next log line
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=(workspace / "server.log").open("ab"),
    )


def _wait_healthy(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log = Path(server.args[4]) / "server.log"  # the -w workspace
            raise RuntimeError(f"server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become healthy")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _commit_stats(url: str) -> float | None:
    """Mean events per group commit, from the server's own histogram."""
    import httpx

    values = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(("propensity_commit_events_sum", "propensity_commit_events_count")):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    count = values.get("propensity_commit_events_count")
    return round(values["propensity_commit_events_sum"] / count, 1) if count else None


def _client(url: str, shape: str, args: argparse.Namespace, *, record: bool = False,
            seconds: float | None = None) -> subprocess.Popen:
    batch = 1 if shape == "track" else args.batch_size
    cmd = [sys.executable, str(Path(__file__).resolve()), "_load", "--url", url, "--shape", shape,
           "--batch-size", str(batch), "--connections", str(args.connections),
           "--seconds", str(seconds or args.seconds), "--warmup", str(0 if record else args.warmup),
           "--contacts", str(args.contacts), "--seed", str(args.seed),
           "--rate", str(0 if record else args.rate)]
    if record:
        cmd.append("--record")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _read_client(process: subprocess.Popen) -> dict[str, Any]:
    out, err = process.communicate(timeout=600)
    if process.returncode != 0:
        raise RuntimeError(f"load client failed: {err.decode()[-2000:]}")
    return json.loads(out)


# --------------------------------------------------------------------------- one backend


class Backend:
    """A fresh store per run: a SQLite file in a temp workspace, or a new PostgreSQL database."""

    def __init__(self, name: str, server_url: str | None) -> None:
        self.name, self.server_url = name, server_url

    def fresh(self, workdir: Path) -> tuple[Path, str | None]:
        workspace = Path(tempfile.mkdtemp(dir=workdir))
        if self.server_url is None:
            return workspace, None
        import sqlalchemy as sa

        name = f"bench_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(self.server_url.replace("postgresql://", "postgresql+psycopg://", 1),
                                 isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        url = sa.make_url(admin.url).set(database=name).render_as_string(hide_password=False)
        admin.dispose()
        return workspace, url

    def stored(self, workspace: Path, url: str | None) -> dict[str, int]:
        import sqlalchemy as sa

        engine = sa.create_engine(url or f"sqlite:///{workspace / 'serve.db'}")
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT event_id, count(*) FROM events GROUP BY event_id")).all()
        engine.dispose()
        return dict(rows)


def _train_scorer(seed: int = 0):
    """A small LightGBM on synthetic events of the load's types; returns (scorer, training frame)."""
    import ibis
    import lightgbm as lgb
    import numpy as np
    import pandas as pd

    from propensity.features.build import build_features, feature_columns
    from propensity.features.config import FeatureConfig
    from propensity.pipelines.training.calibration import ProbabilityCalibrator, ScoreMapper
    from propensity.pipelines.training.model import prepare_matrix
    from propensity.pipelines.training.scorer import LearnedScorer

    rng = np.random.default_rng(seed)
    n, contacts, start = 40_000, 2_000, datetime(2025, 1, 1)
    types = sorted({t for t, _ in TYPES})
    events = pd.DataFrame({
        "event_id": [f"e{i}" for i in range(n)], "contact_id": [f"c{i}" for i in rng.integers(0, contacts, n)],
        "event_type": rng.choice(types, n), "ts": start + pd.to_timedelta(rng.integers(0, 90 * 86_400, n), unit="s"),
        "value": 1.0,
    })
    events["account_id"] = ("a" + (events["contact_id"].str[1:].astype(int) % 300).astype(str)).astype("string")
    events["ts"] = events["ts"].astype("datetime64[us]")
    config = FeatureConfig(event_types=tuple(types))
    con = ibis.duckdb.connect()
    table = con.create_table("events", events)
    frames = []
    for day in (45, 60):
        spine = pd.DataFrame({"contact_id": sorted(events["contact_id"].unique())})
        spine["as_of"] = pd.Timestamp(start + timedelta(days=day)).as_unit("us")
        frames.append(build_features(table, con.create_table(f"spine{day}", spine), config, event_types=types).execute())
    frame = pd.concat(frames, ignore_index=True)
    names = feature_columns(frame)
    signal = frame["trial_started__count_30d"] * 2 + frame["page_view__decayed_7d"] + rng.normal(0, 1, len(frame))
    label = (signal > signal.quantile(0.8)).astype(int).to_numpy()
    matrix, categories = prepare_matrix(frame, names)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 31, "seed": seed},
                        lgb.Dataset(matrix, label), num_boost_round=200)
    raw = booster.predict(matrix)
    calibrator = ProbabilityCalibrator(method="platt").fit(raw, label)
    mapper = ScoreMapper(method="quantile").fit(calibrator.transform(raw), None, rng.uniform(0, 5, len(raw)))
    scorer = LearnedScorer(booster=booster, feature_names=names, categories=categories, calibrator=calibrator,
                           mapper=mapper, best_iteration=booster.current_iteration(),
                           feature_config=config.model_dump(mode="json"), event_types=tuple(types),
                           metadata={"bands": [["cold", 0.0], ["warm", 2.0], ["hot", 3.5]]})
    return scorer, frame


def _register_model(workspace: Path, seed: int = 0) -> str:
    """Register :func:`_train_scorer`'s model as `champion` in the workspace's MLflow store."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from propensity.pipelines.training.tracking import configure_tracking, log_scorer_model

    scorer, frame = _train_scorer(seed)
    configure_tracking(workspace, None, "propensity")
    with mlflow.start_run():
        _, version = log_scorer_model(scorer, frame, "propensity")
    MlflowClient().set_registered_model_alias("propensity", "champion", version)
    return f"LightGBM {scorer.booster.num_trees()} trees, {len(scorer.feature_names)} features"


def run_learned_micro(args: argparse.Namespace) -> list[dict[str, Any]]:
    """In-process cost of the learned score per commit: mirror -> feature rows -> one predict.

    A mirror of ``--contacts`` contacts with 20 events each (the load's types, the last 30 days);
    each timed call scores ``k`` distinct contacts, as a commit that touched ``k`` contacts does.
    """
    from propensity.pipelines.serve.learned import LearnedScores

    scorer, _ = _train_scorer(args.seed)
    learned = LearnedScores(scorer, "bench")
    rng = random.Random(args.seed)
    now = datetime(2026, 1, 1)
    for i in range(args.contacts * 20):
        event, _ = rng.choice(TYPES)
        learned.mirror.add_event(f"c{i % args.contacts}", now - timedelta(seconds=rng.uniform(1, 30 * 86_400)),
                                 event, 1.0, None)
    rows = []
    for k in (1, 20, 150):
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < 3:
            learned.score([f"c{rng.randrange(args.contacts)}" for _ in range(k)], now)
            calls += 1
        ms = (time.perf_counter() - started) / calls * 1000
        rows.append({"contacts_per_commit": k, "ms_per_commit": round(ms, 2), "ms_per_contact": round(ms / k, 3),
                     "events_in_mirror": args.contacts * 20, "load": [round(x, 2) for x in os.getloadavg()]})
        print(f"learned score, {k:>4} contacts per commit: {ms:7.2f} ms per commit, {ms / k:6.3f} ms per contact"
              f"  (load {'/'.join(str(x) for x in rows[-1]['load'])})")
    return rows


def run_load(backend: Backend, shape: str, args: argparse.Namespace, model: str = "none") -> dict[str, Any]:
    workspace, url = backend.fresh(args.workdir)
    described = _register_model(workspace) if model != "none" else None
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start_server(workspace, port, url)
    try:
        _wait_healthy(base, server)
        load_before = os.getloadavg()
        cpu_before = _cpu_seconds(server.pid)
        result = _read_client(_client(base, shape, args))
        cpu_after = _cpu_seconds(server.pid)
        load_after = os.getloadavg()
        commits = _commit_stats(base)
    finally:
        server.terminate()
        server.wait(30)
    lat = result.pop("latencies")
    events_per_s = result["events"] / result["seconds"]
    cpu_s_per_s = (cpu_after - cpu_before) / (args.seconds + args.warmup)
    p50, p99 = _percentile(lat, 50) * 1000, _percentile(lat, 99) * 1000
    return {
        "backend": backend.name, "shape": shape, "model": model, "model_detail": described,
        "events_per_request": 1 if shape == "track" else args.batch_size,
        "connections": args.connections, "seconds": args.seconds,
        "offered_events_per_s": args.rate or None,
        "events_per_s": round(events_per_s, 1), "requests_per_s": round(result["requests"] / result["seconds"], 1),
        "p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "max_ms": round(max(lat) * 1000, 2) if lat else None,
        "errors": result["errors"],
        "server_cpu_s_per_s": round(cpu_s_per_s, 2),
        # what one fully available core would sustain at the measured CPU cost per event
        "events_per_server_cpu_s": round(events_per_s / cpu_s_per_s) if cpu_s_per_s else None,
        "events_per_commit": commits,
        "meets_target": events_per_s >= 2000 and p99 < 50,
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
    }


def run_crash(backend: Backend, args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    workspace, url = backend.fresh(args.workdir)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start_server(workspace, port, url)
    load_before = os.getloadavg()
    try:
        _wait_healthy(base, server)
        client = _client(base, "batch", args, record=True, seconds=args.crash_after + 30)
        time.sleep(args.crash_after)
        server.send_signal(signal.SIGKILL)
        server.wait(30)
        sent = _read_client(client)
        server = _start_server(workspace, port, url)
        _wait_healthy(base, server)
        with httpx.Client(auth=(KEY, ""), timeout=60) as http:
            for calls in sent["sent"]:
                response = http.post(f"{base}/v1/batch", json={"batch": calls})
                response.raise_for_status()
    finally:
        server.kill()
        server.wait(30)
    stored = backend.stored(workspace, url)
    acked = sent["acked"]
    attempted = {c["messageId"] for calls in sent["sent"] for c in calls}
    return {
        "backend": backend.name, "killed_after_s": args.crash_after,
        "acknowledged_before_kill": len(acked), "sent_before_kill": len(attempted),
        "lost": sum(1 for m in acked if m not in stored),
        "doubled": sum(1 for n in stored.values() if n > 1),
        "missing_after_resend": len(attempted - stored.keys()),
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
    }


# --------------------------------------------------------------------------- main


def _postgres(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(server URL, folder to stop) -- a given URL, or a throwaway cluster."""
    given = args.database_url or os.environ.get("PROPENSITY_TEST_DATABASE_URL")
    if given:
        return given, None
    folder = tempfile.mkdtemp(prefix="propensity-pg.", dir="/tmp")
    started = subprocess.run(["bash", str(ROOT / ".ci" / "postgres.sh"), "start", folder],
                             capture_output=True, text=True)
    if started.returncode != 0:
        print(f"PostgreSQL skipped: {started.stderr.strip()[-300:]}")
        return None, None
    return started.stdout.strip().splitlines()[-1], folder


def _print(loads: list[dict], crashes: list[dict]) -> None:
    print(f"\n{'backend':<11}{'shape':<7}{'model':<10}{'ev/req':>7}{'conns':>6}{'offered':>9}{'events/s':>10}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'errors':>7}{'srv cpu':>8}{'ev/cpu-s':>9}{'ev/commit':>10}  target  load (1/5/15 after)")
    for r in loads:
        print(f"{r['backend']:<11}{r['shape']:<7}{r.get('model', 'none'):<10}{r['events_per_request']:>7}{r['connections']:>6}"
              f"{r.get('offered_events_per_s') or 'max':>9}{r['events_per_s']:>10,.0f}{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}{r['errors']:>7}"
              f"{r['server_cpu_s_per_s']:>8.2f}{r['events_per_server_cpu_s'] or 0:>9,}{r['events_per_commit'] or 0:>10}"
              f"  {'met' if r['meets_target'] else 'NOT met':<7} "
              f"{'/'.join(str(x) for x in r['load_after'])}")
    if crashes:
        print(f"\n{'backend':<11}{'acked before kill':>18}{'sent':>8}{'lost':>6}{'doubled':>8}{'missing after resend':>22}")
        for r in crashes:
            print(f"{r['backend']:<11}{r['acknowledged_before_kill']:>18,}{r['sent_before_kill']:>8,}{r['lost']:>6}"
                  f"{r['doubled']:>8}{r['missing_after_resend']:>22}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "_load"])
    parser.add_argument("--only", default="sqlite,postgresql", help="backends: sqlite,postgresql")
    parser.add_argument("--shapes", default="track,batch")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--rate", type=float, default=0,
                        help="offered events/s (open loop, latency from the scheduled send); 0 = as fast as answered")
    parser.add_argument("--contacts", type=int, default=5_000)
    parser.add_argument("--crash-after", type=float, default=6)
    parser.add_argument("--no-crash", action="store_true")
    parser.add_argument("--runs", default="load,crash,poison,memory,sweep",
                        help="which runs: load,crash (the load and SIGKILL runs), poison, memory, sweep")
    parser.add_argument("--poison-seconds", type=float, default=20)
    parser.add_argument("--bad-every", type=int, default=5, help="poison: every Nth request of a connection is bad")
    parser.add_argument("--memory-contacts", type=int, default=1_000_000,
                        help="memory and sweep: distinct contacts sent (one new event each)")
    parser.add_argument("--sweep-rate", type=float, default=300, help="sweep: offered ingest events/s while it runs")
    parser.add_argument("--sweep-seconds", type=float, default=120, help="sweep: how long the ingest load runs")
    parser.add_argument("--sweep-due", type=int, default=None,
                        help="sweep: scored contacts made due at once for the backlog run (default: all)")
    parser.add_argument("--sweep-store", type=Path, default=None,
                        help="sweep: the workspace of an earlier memory run to sweep (SQLite; skips the memory run)")
    parser.add_argument("--sweep-chunk", type=int, default=None, help="sweep: serve config sweep_chunk (default: its own)")
    parser.add_argument("--sweep-duty", type=float, default=None, help="sweep: serve config sweep_duty (default: its own)")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/propensity-serve-bench"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="none", help="none,champion: loads without / with a registered model")
    parser.add_argument("--results", type=Path, default=RESULTS)
    # load-client options
    parser.add_argument("--url")
    parser.add_argument("--shape", default="batch")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    if args.mode == "_load":
        args.seed = args.seed * 1000 + os.getpid()  # unique message ids across runs anyway (uuid4)
        print(json.dumps(asyncio.run(_load(args))))
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    backends = [b.strip() for b in args.only.split(",") if b.strip()]
    import serve_resilience  # beside this file (benchmarks/ is on sys.path when run as a script)

    bench = sys.modules[__name__]
    runs = {r.strip() for r in args.runs.split(",") if r.strip()}
    loads, crashes, stop_folder = [], [], None
    poison, memory, sweeps = [], [], []
    micro = run_learned_micro(args) if "champion" in args.models and "load" in runs else []
    try:
        for name in backends:
            if name == "sqlite":
                backend = Backend("sqlite", None)
            else:
                server_url, stop_folder = _postgres(args)
                if server_url is None:
                    continue
                backend = Backend("postgresql", server_url)
            if "load" in runs:
                for shape in [s.strip() for s in args.shapes.split(",") if s.strip()]:
                    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
                        loads.append(run_load(backend, shape, args, model))
                        _print(loads[-1:], [])
            if "crash" in runs and not args.no_crash:
                crashes.append(run_crash(backend, args))
            if "poison" in runs:
                poison.append(serve_resilience.run_poison(bench, backend, args))
            if "memory" in runs or ("sweep" in runs and args.sweep_store is None):
                row, store = serve_resilience.run_memory(bench, backend, args)
                memory.append(row)
            elif "sweep" in runs:  # a store left by an earlier memory run (SQLite)
                store = (args.sweep_store, None)
            if "sweep" in runs:
                # the steady state (only what came due by itself), then a backlog made due
                sweeps.append(serve_resilience.run_sweep(bench, backend, store, args, 0, args.sweep_seconds / 2))
                sweeps.append(serve_resilience.run_sweep(bench, backend, store, args, args.sweep_due,
                                                         args.sweep_seconds))
    finally:
        if stop_folder:
            subprocess.run(["bash", str(ROOT / ".ci" / "postgres.sh"), "stop", stop_folder], capture_output=True)
    _print(loads, crashes)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "settings": {k: str(v) for k, v in vars(args).items() if k not in ("url", "shape", "record", "mode")},
        "load": loads, "crash": crashes, "learned_per_commit": micro,
        "poison": poison, "memory": memory, "sweep": sweeps,
    }, indent=2))
    print(f"\n-> {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
