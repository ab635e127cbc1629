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

Load: wrk (``apt-get install wrk``) in its own process, ``--threads`` threads and
``--connections`` keep-alive connections, closed loop (each connection sends its next request
when the previous one is answered), posts Segment calls with fresh ``messageId``s for
``--contacts`` contacts for ``--seconds`` after a ``--warmup`` run (``benchmarks/wrk_load.py``).
A 200 comes back only once the request's events are committed and the contacts rescored, and
the body carries the new score, so a request's latency IS the latency from request to updated
score. Two shapes: ``track`` (one event per request, as a server-side integration would send)
and ``batch`` (the Segment SDKs' default, here ``--batch-size`` events per request). The floor:
the same wrk load on a bare endpoint under the same uvicorn (``benchmarks/serve_floor.py``:
parse the body, answer ``{"success": true}``); ``x floor`` is the service's requests/s over it.

Crash: SIGKILL of the server after ``--crash-after`` seconds of wrk load (``track`` and
``batch`` connections at once, each wrk thread recording what it sent and which message ids came
back 200), a restart, every request resent (as SDKs retry), then: acknowledged events missing
(lost) and any event stored more than once (doubled), which must both be zero.

``--runs mirror``: the learned score's event mirror in process, every event kept vs folded past
the model's horizon, for ``--mirror-events`` events over a year and three times that over three
years (the same contacts): RSS per million events.

``--runs split``: one score request with the learned score's change split, on the default
champion (``benchmarks/serve_split.py``).

``--runs`` adds the runs of issue 15 (``benchmarks/serve_resilience.py``): ``poison`` (bad
requests mixed into the load: every good one acknowledged, every bad one 4xx, 0 lost),
``memory`` (``--memory-contacts`` distinct contacts, 1M by default: the server's RSS as they
arrive, with the LRU bound) and ``sweep`` (every scored contact of that store due at once, ingest
p99 while the sweep runs)::

    python benchmarks/serve_bench.py --only sqlite --runs poison,memory,sweep \
        --results benchmarks/results/serve_bench_resilience.json

The sweep run again on the store a memory run left (it prints the workspace and, on PostgreSQL,
the database URL)::

    python benchmarks/serve_bench.py --only postgresql --runs sweep --sweep-store WORKSPACE \
        --sweep-database-url URL --sweep-due 30000 --sweep-rate 100 --sweep-connections 32

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
import base64
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

import serve_split  # beside this file (benchmarks/ is on sys.path when run as a script)
import wrk_load

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serve_bench.json"
KEY = "bench-key"
TYPES = [("page_view", {"path": "/pricing"}), ("page_view", {"path": "/docs"}), ("feature_used", None),
         ("email_open", None), ("email_click", None), ("trial_started", None), ("demo_requested", None),
         ("webinar_attended", None)]


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


def _wait_healthy(url: str, server: subprocess.Popen, timeout: float = 180, workspace: Path | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log = (workspace or Path(server.args[4])) / ("floor.log" if workspace else "server.log")
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
    for line in httpx.get(f"{url}/metrics", auth=(KEY, ""), timeout=10).text.splitlines():
        if line.startswith(("propensity_commit_events_sum", "propensity_commit_events_count")):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    count = values.get("propensity_commit_events_count")
    return round(values["propensity_commit_events_sum"] / count, 1) if count else None


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
    from propensity.pipelines.training.calibration import (
        ProbabilityCalibrator,
        ScoreMapper,
    )
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

    from propensity.pipelines.training.tracking import (
        configure_tracking,
        log_scorer_model,
    )

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


def _auth() -> str:
    return base64.b64encode(f"{KEY}:".encode()).decode()


def _path(shape: str) -> str:
    return "/v1/track" if shape == "track" else "/v1/batch"


def _wrk(base: str, shape: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """A warm-up run, then the measured one; wrk's summary of the measured run."""
    script = wrk_load.write_script(folder, path=_path(shape), batch=0 if shape == "track" else args.batch_size,
                                   contacts=args.contacts, auth_b64=_auth(), seed=args.seed)
    if args.warmup > 0:
        wrk_load.run_wrk(base + _path(shape), script, connections=args.connections, threads=args.threads,
                         seconds=args.warmup)
    return wrk_load.run_wrk(base + _path(shape), script, connections=args.connections, threads=args.threads,
                            seconds=args.seconds)


def run_floor(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    """The same wrk load on a bare endpoint of the same server stack (benchmarks/serve_floor.py)."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    folder = Path(tempfile.mkdtemp(dir=args.workdir))
    server = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "serve_floor.py"), "--port", str(port),
                               "--workers", str(args.floor_workers)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(folder / "floor.log").open("ab"))
    try:
        _wait_healthy(base, server, workspace=folder)
        result = _wrk(base, shape, args, folder)
    finally:
        server.terminate()
        server.wait(30)
    seconds = result["duration_us"] / 1e6
    return {"workers": args.floor_workers,
            "requests_per_s": round(result["ok"] / seconds, 1), "p99_ms": round(result["p99_us"] / 1000, 2),
            "errors": result["requests"] - result["ok"] + result["connect"] + result["read"] + result["timeout"]}


def _mirror_child(events: int, contacts: int, days: int, fold: bool) -> dict[str, Any]:
    """In a fresh process: RSS of the learned score's event mirror holding ``events``."""
    import gc
    from types import SimpleNamespace

    from propensity.features.config import FeatureConfig
    from propensity.pipelines.serve.feature_plan import FeaturePlan
    from propensity.pipelines.serve.mirror import EventMirror

    types = sorted({t for t, _ in TYPES})
    # the default windows (7/30/90 days -> horizon 91), no monetary type (the load has no amounts)
    config = FeatureConfig(event_types=tuple(types), monetary_types=())
    plan = FeaturePlan.from_scorer(SimpleNamespace(feature_config=config.model_dump(mode="json"),
                                                   event_types=tuple(types), feature_names=[], categories={}))
    rng = random.Random(3)
    now = datetime(2026, 6, 1)
    gc.collect()
    before = _rss_mb(os.getpid())
    mirror = EventMirror(plan)
    if fold:
        mirror.fold(now)  # as the service loads: events older than the horizon fold as they arrive
    started = time.perf_counter()
    for i in range(events):
        mirror.add_event(f"c{i % contacts}", now - timedelta(seconds=rng.uniform(1, days * 86_400)),
                         rng.choice(types), 1.0, None)
    load_s = time.perf_counter() - started
    gc.collect()
    after = _rss_mb(os.getpid())
    ids = [f"c{rng.randrange(contacts)}" for _ in range(20)]
    started = time.perf_counter()
    for _ in range(20):
        mirror.feature_arrays(ids, now)
    live = sum(len(log.ts) for log in mirror._logs.values())
    return {"fold": fold, "events": events, "contacts": contacts, "days_spanned": days,
            "horizon_days": mirror._horizon // 86_400_000_000, "events_kept_one_by_one": live,
            "rss_mb": round(after - before, 1), "rss_mb_per_million_events": round((after - before) / events * 1e6, 1),
            "load_s": round(load_s, 1), "ms_per_feature_pass_of_20": round((time.perf_counter() - started) / 20 * 1000, 2),
            "load": [round(x, 2) for x in os.getloadavg()]}


def run_mirror_memory(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The learned score's event mirror, unbounded (every event) vs folded past the model's horizon."""
    rows = []
    # the same contacts and events per day, over one year and over three: what the mirror holds
    # grows with the span when it keeps every event, and stays put when it folds past the horizon
    for events, days in ((args.mirror_events, 365), (3 * args.mirror_events, 3 * 365)):
        for fold in (False, True):
            done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--mirror-child", "1" if fold else "0",
                                   "--mirror-events", str(events), "--mirror-days", str(days),
                                   "--mirror-contacts", str(max(args.mirror_events // 20, 1))],
                                  cwd=ROOT, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-2000:])
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"mirror {'folded' if fold else 'every event'}: {r['events']:,} events over {r['days_spanned']} days "
                  f"({r['contacts']:,} contacts), {r['events_kept_one_by_one']:,} kept one by one: RSS {r['rss_mb']} MB "
                  f"= {r['rss_mb_per_million_events']} MB per million events; feature pass of 20 contacts "
                  f"{r['ms_per_feature_pass_of_20']} ms (load {'/'.join(str(x) for x in r['load'])})")
    return rows


def run_load(backend: Backend, shape: str, args: argparse.Namespace, model: str = "none",
             floor: dict[str, Any] | None = None) -> dict[str, Any]:
    workspace, url = backend.fresh(args.workdir)
    described = _register_model(workspace) if model != "none" else None
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start_server(workspace, port, url, extra=args.server_args)
    try:
        _wait_healthy(base, server)
        load_before = os.getloadavg()
        cpu_before, started = _cpu_seconds(server.pid), time.perf_counter()
        result = _wrk(base, shape, args, workspace)
        cpu_after, elapsed = _cpu_seconds(server.pid), time.perf_counter() - started
        load_after = os.getloadavg()
        commits = _commit_stats(base)
        rss = _rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    per_request = 1 if shape == "track" else args.batch_size
    seconds = result["duration_us"] / 1e6
    requests_per_s = result["ok"] / seconds
    events_per_s = requests_per_s * per_request
    cpu_s_per_s = (cpu_after - cpu_before) / elapsed
    p50, p99 = result["p50_us"] / 1000, result["p99_us"] / 1000
    target = 2000 if shape == "track" else 10_000  # issue 14: requests/s for track, events/s for batch
    measure = requests_per_s if shape == "track" else events_per_s
    return {
        "backend": backend.name, "shape": shape, "model": model, "model_detail": described,
        "events_per_request": per_request, "connections": args.connections, "wrk_threads": args.threads,
        "seconds": round(seconds, 1),
        "events_per_s": round(events_per_s, 1), "requests_per_s": round(requests_per_s, 1),
        "p50_ms": round(p50, 2), "p90_ms": round(result["p90_us"] / 1000, 2), "p99_ms": round(p99, 2),
        "max_ms": round(result["max_us"] / 1000, 2),
        "errors": result["requests"] - result["ok"] + result["connect"] + result["read"] + result["timeout"],
        "server_cpu_s_per_s": round(cpu_s_per_s, 2),
        # what one fully available core would sustain at the measured CPU cost per event
        "events_per_server_cpu_s": round(events_per_s / cpu_s_per_s) if cpu_s_per_s else None,
        "events_per_commit": commits, "server_rss_mb": rss,
        "floor_requests_per_s": floor["requests_per_s"] if floor else None,
        "ratio_to_floor": round(requests_per_s / floor["requests_per_s"], 3) if floor else None,
        "target": f">= {target:,} {'requests' if shape == 'track' else 'events'}/s, p99 < 50 ms",
        "meets_target": measure >= target and p99 < 50,
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
        "server_args": args.server_args,
    }


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _read_lines(folder: Path, prefix: str) -> list[str]:
    return [line for f in sorted(folder.glob(f"{prefix}-*")) for line in f.read_text().splitlines() if line]


def run_crash(backend: Backend, args: argparse.Namespace) -> dict[str, Any]:
    """SIGKILL under wrk load (``batch`` and ``track`` connections at once), restart, resend everything.

    Each wrk thread has one connection and records what it sent and which message ids came back
    200 (benchmarks/wrk_load.py), so "lost" is exact: an acknowledged id missing from the store.
    """
    import httpx

    workspace, url = backend.fresh(args.workdir)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start_server(workspace, port, url, extra=args.server_args)
    load_before = os.getloadavg()
    clients = []
    try:
        _wait_healthy(base, server)
        for shape, connections in (("batch", max(1, args.connections // 4)), ("track", args.connections)):
            record = workspace / f"record-{shape}"
            record.mkdir()
            script = wrk_load.write_script(workspace, path=_path(shape), batch=0 if shape == "track" else args.batch_size,
                                           contacts=args.contacts, auth_b64=_auth(), seed=args.seed, record_dir=record)
            clients.append((record, wrk_load.popen_wrk(base + _path(shape), script, connections=connections,
                                                       threads=connections, seconds=args.crash_after + 4)))
        time.sleep(args.crash_after)
        acked_at_kill = sum(len(_read_lines(record, "acked")) for record, _ in clients)
        server.send_signal(signal.SIGKILL)
        server.wait(30)
        for _, client in clients:  # at once: against a dead server wrk would spin on refused connects
            client.kill()
            client.communicate(timeout=120)
        server = _start_server(workspace, port, url, extra=args.server_args)
        _wait_healthy(base, server)
        sent_bodies = [(record.name, body) for record, _ in clients for body in _read_lines(record, "sent")]
        with httpx.Client(auth=(KEY, ""), timeout=60) as http:
            for name, body in sent_bodies:  # every request is retried, as SDKs do
                response = http.post(base + _path(name.removeprefix("record-")), content=body,
                                     headers={"Content-Type": "application/json"})
                response.raise_for_status()
    finally:
        server.kill()
        server.wait(30)
    stored = backend.stored(workspace, url)
    acked = [i for record, _ in clients for i in _read_lines(record, "acked")]
    attempted = set()
    for _, body in sent_bodies:
        parsed = json.loads(body)
        attempted.update(c["messageId"] for c in parsed.get("batch", [parsed]))
    return {
        "backend": backend.name, "killed_after_s": args.crash_after,
        "acknowledged_before_kill": len(acked), "acknowledged_at_kill_check": acked_at_kill,
        "acknowledged_per_s_before_kill": round(len(acked) / args.crash_after),
        "sent_before_kill": len(attempted),
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
    print(f"\n{'backend':<11}{'shape':<7}{'model':<10}{'ev/req':>7}{'conns':>6}{'req/s':>8}{'events/s':>10}{'p50 ms':>8}"
          f"{'p99 ms':>8}{'errors':>7}{'srv cpu':>8}{'ev/commit':>10}{'floor req/s':>12}{'x floor':>8}  target   "
          "load (1/5/15 after)")
    for r in loads:
        ratio = f"{r['ratio_to_floor']:.2f}" if r["ratio_to_floor"] is not None else "-"
        print(f"{r['backend']:<11}{r['shape']:<7}{r.get('model', 'none'):<10}{r['events_per_request']:>7}"
              f"{r['connections']:>6}{r['requests_per_s']:>8,.0f}{r['events_per_s']:>10,.0f}{r['p50_ms']:>8.1f}"
              f"{r['p99_ms']:>8.1f}{r['errors']:>7}{r['server_cpu_s_per_s']:>8.2f}{r['events_per_commit'] or 0:>10}"
              f"{r['floor_requests_per_s'] or 0:>12,.0f}{ratio:>8}  {'met' if r['meets_target'] else 'NOT met':<8} "
              f"{'/'.join(str(x) for x in r['load_after'])}")
    if crashes:
        print(f"\n{'backend':<11}{'acked before kill':>18}{'acked/s':>9}{'sent':>8}{'lost':>6}{'doubled':>8}"
              f"{'missing after resend':>22}  load (after)")
        for r in crashes:
            print(f"{r['backend']:<11}{r['acknowledged_before_kill']:>18,}{r['acknowledged_per_s_before_kill']:>9,}"
                  f"{r['sent_before_kill']:>8,}{r['lost']:>6}{r['doubled']:>8}{r['missing_after_resend']:>22}  "
                  f"{'/'.join(str(x) for x in r['load_after'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="sqlite,postgresql", help="backends: sqlite,postgresql")
    parser.add_argument("--shapes", default="track,batch")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (the load runs)")
    parser.add_argument("--serve-config", type=Path, default=None, help="serve YAML passed to the server (--config)")
    parser.add_argument("--no-floor", action="store_true", help="skip the bare-endpoint floor runs")
    parser.add_argument("--contacts", type=int, default=5_000)
    parser.add_argument("--crash-after", type=float, default=6)
    parser.add_argument("--no-crash", action="store_true")
    parser.add_argument("--runs", default="load,crash,poison,memory,sweep",
                        help="which runs: load,crash (the load and SIGKILL runs), poison, memory, sweep, mirror, "
                             "split (a score request with the learned change split: benchmarks/serve_split.py)")
    parser.add_argument("--poison-seconds", type=float, default=20)
    parser.add_argument("--bad-every", type=int, default=5, help="poison: every Nth request of a connection is bad")
    parser.add_argument("--memory-contacts", type=int, default=1_000_000,
                        help="memory and sweep: distinct contacts sent (one new event each)")
    parser.add_argument("--sweep-rate", type=float, default=300, help="sweep: offered ingest events/s while it runs")
    parser.add_argument("--floor-workers", type=int, default=1,
                        help="HTTP worker processes of the bare floor server (2: the best several could do)")
    parser.add_argument("--sweep-connections", type=int, default=8,
                        help="sweep: client connections of the open-loop ingest (the most requests in flight)")
    parser.add_argument("--sweep-seconds", type=float, default=120, help="sweep: how long the ingest load runs")
    parser.add_argument("--sweep-due", type=int, default=None,
                        help="sweep: scored contacts made due at once for the backlog run (default: all)")
    parser.add_argument("--sweep-store", type=Path, default=None,
                        help="sweep: the workspace of an earlier memory run to sweep (skips the memory run)")
    parser.add_argument("--sweep-database-url", default=None,
                        help="sweep: with --sweep-store, that run's PostgreSQL database (its URL, printed by the "
                             "memory run)")
    parser.add_argument("--sweep-chunk", type=int, default=None, help="sweep: serve config sweep_chunk (default: its own)")
    parser.add_argument("--sweep-duty", type=float, default=None, help="sweep: serve config sweep_duty (default: its own)")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/propensity-serve-bench"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="none", help="none,champion: loads without / with a registered model")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--mirror-events", type=int, default=1_000_000,
                        help="mirror: events in the learned score's event mirror (run: --runs mirror)")
    parser.add_argument("--mirror-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mirror-days", type=int, default=365, help=argparse.SUPPRESS)
    parser.add_argument("--mirror-contacts", type=int, default=50_000, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mirror_child is not None:
        print(json.dumps(_mirror_child(args.mirror_events, args.mirror_contacts, args.mirror_days,
                                       args.mirror_child == "1")))
        return 0
    args.server_args = ["--config", str(args.serve_config)] if args.serve_config else []
    args.workdir.mkdir(parents=True, exist_ok=True)
    backends = [b.strip() for b in args.only.split(",") if b.strip()]
    import serve_resilience  # beside this file (benchmarks/ is on sys.path when run as a script)

    bench = sys.modules[__name__]
    runs = {r.strip() for r in args.runs.split(",") if r.strip()}
    loads, crashes, stop_folder = [], [], None
    poison, memory, sweeps = [], [], []
    floors: dict[str, dict[str, Any]] = {}
    micro = run_learned_micro(args) if "champion" in args.models and "load" in runs else []
    mirror = run_mirror_memory(args) if "mirror" in runs else []
    split = serve_split.run_split(argparse.Namespace(contacts=150, rounds=3)) if "split" in runs else None
    if split is not None:
        serve_split.print_split(split)
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
                    if shape not in floors and not args.no_floor:
                        floors[shape] = run_floor(shape, args)
                    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
                        loads.append(run_load(backend, shape, args, model, floors.get(shape)))
                        _print(loads[-1:], [])
            if "crash" in runs and not args.no_crash:
                crashes.append(run_crash(backend, args))
            if "poison" in runs:
                poison.append(serve_resilience.run_poison(bench, backend, args))
            if "memory" in runs or ("sweep" in runs and args.sweep_store is None):
                row, store = serve_resilience.run_memory(bench, backend, args)
                memory.append(row)
            elif "sweep" in runs:  # a store left by an earlier memory run
                store = (args.sweep_store, args.sweep_database_url if backend.server_url else None)
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
        "settings": {k: str(v) for k, v in vars(args).items()},
        "load_generator": subprocess.run([wrk_load.wrk_path(), "-v"], capture_output=True, text=True,
                                         ).stdout.strip().splitlines()[0] if "load" in runs or "crash" in runs else None,
        "floor": floors, "load": loads, "crash": crashes, "learned_per_commit": micro,
        "poison": poison, "memory": memory, "sweep": sweeps, "mirror": mirror, "learned_split": split,
    }, indent=2))
    print(f"\n-> {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
