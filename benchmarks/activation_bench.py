"""Speed of the activation path: trigger evaluation, the sweep, outbox delivery, and push.

Not a test. Run from the repository root::

    python benchmarks/activation_bench.py                 # SQLite in a temp folder
    python benchmarks/activation_bench.py --changes 50000 --contacts 5000

Sections (SQLite WAL file made by the service's engine factory, shipped ``configs/triggers.yaml``):

1. ``evaluate``: ``--changes`` score changes over ``--contacts`` contacts (random walk of the
   0-5 score, an event every few minutes), evaluated in transactions of ``--group`` changes as the
   service's writer does (one commit per group). Reports changes/s and the cost per change,
   which the service pays inside its event commit.
2. ``sweep``: every contact once, decay-only changes (score down 10%), in chunks of 500.
3. ``deliver``: ``--messages`` outbox rows delivered to a local ``http.server`` receiver that
   answers 200 (signing, one POST each, state updates).
4. ``push``: ``--push-contacts`` rule scores pushed as Segment ``/v1/batch`` identify calls of
   100 to the same receiver, rate limit out of the way; then the same push again (nothing
   changed: only the state comparison).

Prints a table and writes ``benchmarks/results/activation_bench.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from propensity.pipelines.activation.outbox import RetryPolicy, WebhookSender, deliver_due, enqueue
from propensity.pipelines.activation.push import PushOptions, SegmentBatch, push, traits_from_scores
from propensity.pipelines.activation.tables import create_activation_tables, outbox
from propensity.pipelines.activation.triggers import ScoreChange, TriggerEngine, load_triggers
from propensity.pipelines.serve.db import make_engine

ROOT = Path(__file__).resolve().parents[1]
BANDS = ((3.5, "hot"), (2.0, "warm"), (0.0, "cold"))


def band(score: float) -> str:
    return next(name for edge, name in BANDS if score >= edge)


def receiver() -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def bench_evaluate(engine, trigger_engine, contacts: int, changes: int, group: int, rng: random.Random) -> dict:
    scores = {f"c{i}": None for i in range(contacts)}
    at = dt.datetime(2026, 3, 1)
    batch, fired, seconds, cpu = [], 0, 0.0, 0.0
    with_firing: list[float] = []
    without_firing: list[float] = []
    for n in range(changes):
        contact = f"c{rng.randrange(contacts)}"
        before = scores[contact]
        after = min(5.0, max(0.0, (before or 0.0) + rng.gauss(0.15, 0.6)))
        scores[contact] = after
        at += dt.timedelta(seconds=rng.randint(1, 300))
        batch.append(ScoreChange(contact, at, before, after, None if before is None else band(before), band(after),
                                 None if before is None else before * 60, after * 60,
                                 [{"event_id": f"e{n}", "event_type": "feature_used", "ts": at, "value": 1.0}]))
        if len(batch) == group or n == changes - 1:
            started, cpu_started = time.perf_counter(), time.process_time()
            with engine.begin() as conn:
                for change in batch:
                    t0 = time.perf_counter()
                    count = len(trigger_engine.evaluate(conn, change))
                    (with_firing if count else without_firing).append(time.perf_counter() - t0)
                    fired += count
            seconds += time.perf_counter() - started
            cpu += time.process_time() - cpu_started
            batch = []

    def pct(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[q - 1] * 1e6 if len(values) > 1 else float("nan")

    return {"changes": changes, "seconds": seconds, "per_second": changes / seconds,
            "us_per_change": seconds / changes * 1e6, "cpu_us_per_change": cpu / changes * 1e6, "firings": fired,
            "us_no_firing_p50": pct(without_firing, 50), "us_no_firing_p99": pct(without_firing, 99),
            "us_firing_p50": pct(with_firing, 50), "us_firing_p99": pct(with_firing, 99),
            "last_at": at, "scores": scores}


def bench_sweep(engine, trigger_engine, scores: dict, at: dt.datetime) -> dict:
    changes = [ScoreChange(c, at + dt.timedelta(days=3), s, s * 0.9, band(s), band(s * 0.9), s * 60, s * 54, [])
               for c, s in scores.items() if s is not None]
    started, fired = time.perf_counter(), 0
    for start in range(0, len(changes), 500):
        with engine.begin() as conn:
            fired += len(trigger_engine.sweep(conn, changes[start:start + 500]))
    seconds = time.perf_counter() - started
    return {"contacts": len(changes), "seconds": seconds, "per_second": len(changes) / seconds, "firings": fired}


def bench_deliver(engine, url: str, messages: int) -> dict:
    with engine.begin() as conn:
        conn.execute(sa.delete(outbox))
        for i in range(messages):
            enqueue(conn, idempotency_key=f"bench-{i}", kind="trigger", contact_id=f"c{i}",
                    payload={"type": "propensity.trigger", "contact_id": f"c{i}", "why_now": {"score_after": 3.0}})
    with WebhookSender(url, "bench-secret") as sender:
        started = time.perf_counter()
        delivered = 0
        while True:
            report = deliver_due(engine, sender, limit=500, policy=RetryPolicy())
            delivered += report.delivered
            if report.attempted == 0:
                break
        seconds = time.perf_counter() - started
    return {"messages": messages, "delivered": delivered, "seconds": seconds, "per_second": delivered / seconds}


def bench_push(engine, url: str, contacts: int, rng: random.Random) -> dict:
    frame = pd.DataFrame({"contact_id": [f"p{i}" for i in range(contacts)], "as_of": pd.Timestamp("2026-03-01"),
                          "rule_score": [round(rng.uniform(0, 5), 3) for _ in range(contacts)],
                          "points__demo_request": [rng.choice([0.0, 150.0]) for _ in range(contacts)],
                          "points__pricing_page": [rng.uniform(0, 40) for _ in range(contacts)]})
    frame["band"] = [band(s) for s in frame["rule_score"]]
    destination = SegmentBatch(url, "bench-write-key")
    options = PushOptions(batch_size=100, rate=1e6)
    started = time.perf_counter()
    traits = traits_from_scores(frame)
    first = push(engine, destination, traits, options=options)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    second = push(engine, destination, traits_from_scores(frame), options=options)
    again = time.perf_counter() - started
    return {"contacts": contacts, "sent": first.sent, "requests": first.requests, "seconds": seconds,
            "per_second": first.sent / seconds, "unchanged_rerun_seconds": again, "rerun_sent": second.sent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=2000)
    parser.add_argument("--changes", type=int, default=20000)
    parser.add_argument("--group", type=int, default=100)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--push-contacts", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="propensity-activation-bench.") as folder:
        engine = make_engine(f"sqlite:///{Path(folder) / 'serve.db'}")
        create_activation_tables(engine)
        trigger_engine = TriggerEngine(load_triggers(ROOT / "configs" / "triggers.yaml"))
        server, url = receiver()
        try:
            evaluate = bench_evaluate(engine, trigger_engine, args.contacts, args.changes, args.group, rng)
            sweep = bench_sweep(engine, trigger_engine, evaluate.pop("scores"), evaluate.pop("last_at"))
            deliver = bench_deliver(engine, url, args.messages)
            pushed = bench_push(engine, url, args.push_contacts, rng)
        finally:
            server.shutdown()
            engine.dispose()
    results = {"evaluate": evaluate, "sweep": sweep, "deliver": deliver, "push": pushed,
               "load_before": load_before, "load_after": os.getloadavg(), "cores": os.cpu_count(),
               "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    print(f"{'step':<10} {'items':>8} {'seconds':>9} {'items/s':>10}  notes")
    print(f"{'evaluate':<10} {evaluate['changes']:>8,} {evaluate['seconds']:>9.2f} {evaluate['per_second']:>10,.0f}  "
          f"{evaluate['us_per_change']:.0f} us per change incl. commits of {args.group} "
          f"({evaluate['cpu_us_per_change']:.0f} us CPU); "
          f"{evaluate['firings']:,} firings")
    print(f"{'':<10} {'':>8} {'':>9} {'':>10}  evaluate() alone: no firing p50 {evaluate['us_no_firing_p50']:.0f} us, "
          f"p99 {evaluate['us_no_firing_p99']:.0f} us; firing p50 {evaluate['us_firing_p50']:.0f} us, "
          f"p99 {evaluate['us_firing_p99']:.0f} us")
    print(f"{'sweep':<10} {sweep['contacts']:>8,} {sweep['seconds']:>9.2f} {sweep['per_second']:>10,.0f}  "
          f"{sweep['firings']:,} firings")
    print(f"{'deliver':<10} {deliver['delivered']:>8,} {deliver['seconds']:>9.2f} {deliver['per_second']:>10,.0f}  "
          "signed POSTs to a loopback receiver, one at a time")
    print(f"{'push':<10} {pushed['sent']:>8,} {pushed['seconds']:>9.2f} {pushed['per_second']:>10,.0f}  "
          f"{pushed['requests']} /v1/batch requests; unchanged rerun {pushed['unchanged_rerun_seconds']:.2f} s, "
          f"sent {pushed['rerun_sent']}")
    print(f"load average before {load_before[0]:.1f}, after {results['load_after'][0]:.1f} ({os.cpu_count()} cores)")
    out = ROOT / "benchmarks" / "results" / "activation_bench.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
