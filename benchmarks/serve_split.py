"""What one score request costs when it carries the learned score's change split.

Not a test. Run from the repository root::

    python benchmarks/serve_split.py                       # 200 contacts, each asked 3 times
    python benchmarks/serve_split.py --contacts 100 --rounds 5
    python benchmarks/serve_bench.py --runs split          # the same, as a run of the service benchmark

A synthetic world (2,500 contacts, 150 days) is trained with the train config's defaults, so the
model is the default champion: it reads the rules' columns (``rule_inputs: true``). A real
uvicorn server (in a thread of this process, as the tests run it) serves it with the shipped SaaS
rules; ``--contacts`` contacts get their history up to three days before the end at one instant,
then the last three days at a later one, so every contact's last change has a learned split.
Timed, sequentially on one keep-alive connection:

* ``GET /v1/contacts/{id}/score``: rule score, learned score, learned reasons and both splits;
* the same request with ``learned_split=false`` (the rule split only);
* in process, the learned split alone (``LearnedScores.change_split``: four feature states, the
  stored events replayed for the rules' columns, Shapley values over the groups that changed);
* the floor: the learned score of one contact at one instant (``LearnedScores.score``).

Prints a table (median, p90, p99 in ms, ratio of the median to the floor's, load average) and
writes ``benchmarks/results/serve_split.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serve_split.json"
KEY = "bench-key"


def _trained(folder: Path):
    """A workspace with a synthetic world and its default champion's scorer (``rule_inputs: true``)."""
    from propensity.features.store import Workspace, ingest_file
    from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world
    from propensity.pipelines.training.config import load_train_config
    from propensity.pipelines.training.train import train

    paths = write_world(generate_world(WorldConfig(contacts=2500, days=150, seed=5)), folder / "data", fmt="parquet")
    ws = Workspace(folder / "ws")
    for kind in ("contacts", "events", "outcomes"):
        ingest_file(ws, kind, paths[kind])
    config = {"rules": str(ROOT / "configs/rules/saas.yaml"), "features": str(ROOT / "configs/features.yaml"),
              "grid": {"first": "2025-01-15", "last": "2025-04-25", "step_days": 10}, "horizon_days": 21,
              "model": {"tune": False, "n_trials": 1, "timeout_seconds": 900, "seed": 0}, "min_positives": 20,
              "points_only_below": 20, "mlflow": {"experiment": "split-bench", "model_name": "split-bench"}}
    (folder / "train.yaml").write_text(yaml.safe_dump(config))
    result = train(ws, load_train_config(folder / "train.yaml"))
    return ws, result.scorer


def _serve(app):
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


def _stats(ms: list[float], floor: float | None) -> dict:
    values = np.array(ms)
    median = float(np.median(values))
    return {"n": len(ms), "median_ms": round(median, 3), "p90_ms": round(float(np.percentile(values, 90)), 3),
            "p99_ms": round(float(np.percentile(values, 99)), 3),
            "x_floor": round(median / floor, 1) if floor else 1.0}


def run_split(args: argparse.Namespace) -> dict:
    import httpx
    import pandas as pd

    from propensity.pipelines.activation.backfill import backfill
    from propensity.pipelines.rules import load_rules
    from propensity.pipelines.serve.app import ServiceSettings, create_app

    folder = Path(tempfile.mkdtemp(prefix="serve-split."))
    started = time.perf_counter()
    ws, scorer = _trained(folder)
    print(f"trained the default champion in {time.perf_counter() - started:.0f} s "
          f"({len(scorer.feature_names)} features, rule_inputs: {scorer.rule_inputs is not None})", file=sys.stderr)
    con = ws.ibis_connection()
    contacts = con.table("contacts").execute()
    events = con.table("events").execute()
    end = pd.Timestamp(events["ts"].max()).to_pydatetime()
    t0, t1 = end - timedelta(days=3), end + timedelta(hours=1)
    # contacts created before the first instant (the service takes no createdAt a day after its clock)
    known = contacts[contacts["created_at"].isna() | (contacts["created_at"] < t0)]
    ids = sorted(known["contact_id"].astype(str))[: args.contacts]
    contacts = contacts[contacts["contact_id"].astype(str).isin(ids)]
    events = events[events["contact_id"].astype(str).isin(ids)].sort_values("ts", kind="stable")
    clock = {"now": t0}
    settings = ServiceSettings(database_url=f"sqlite:///{folder / 'serve.db'}",
                               rules=load_rules(ROOT / "configs/rules/saas.yaml"), write_keys=frozenset({KEY}),
                               model=scorer, model_label="split-bench champion")
    app = create_app(settings, clock=lambda: clock["now"])
    server, thread, base = _serve(app)
    try:
        backfill(contacts, [events[events["ts"] < t0]], base, KEY, batch_size=400)
        clock["now"] = t1
        backfill(None, [events[events["ts"] >= t0]], base, KEY, batch_size=400)
        learned = app.state.runtime["writer"].learned
        engine = app.state.runtime["engine"]
        get_ms, plain_ms, split_ms, floor_ms, parts = [], [], [], [], []
        unavailable = 0  # learned_split null: the last change is older than the mirror keeps
        with httpx.Client(auth=(KEY, ""), timeout=60) as http:
            http.get(f"{base}/v1/contacts/{ids[0]}/score")  # warm: imports, first explain
            for _ in range(args.rounds):
                for contact in ids:
                    t = time.perf_counter()
                    body = http.get(f"{base}/v1/contacts/{contact}/score").json()
                    took = (time.perf_counter() - t) * 1000
                    split = body["last_change"].get("learned_split")
                    unavailable += split is None
                    if split is None or split["since"] == split["until"]:
                        continue  # timed: the contacts whose last change spans the three days
                    get_ms.append(took)
                    t = time.perf_counter()
                    http.get(f"{base}/v1/contacts/{contact}/score", params={"learned_split": "false"}).json()
                    plain_ms.append((time.perf_counter() - t) * 1000)
                    parts.append(len(split["parts"]))
                    since, until = (pd.Timestamp(split[k]).to_pydatetime() for k in ("since", "until"))
                    found = app.state.runtime["writer"].current(contact, until)
                    with engine.connect() as conn:
                        t = time.perf_counter()
                        learned.change_split(conn, contact, since, until)
                        split_ms.append((time.perf_counter() - t) * 1000)
                    t = time.perf_counter()
                    learned.score([contact], until, {contact: found[1].state})
                    floor_ms.append((time.perf_counter() - t) * 1000)
    finally:
        server.should_exit = True
        thread.join(30)
    floor = float(np.median(floor_ms)) if floor_ms else None
    rows = {"learned score of one contact (floor)": _stats(floor_ms, floor),
            "learned split alone (in process)": _stats(split_ms, floor),
            "GET score, learned_split=false (HTTP)": _stats(plain_ms, floor),
            "GET score with both splits (HTTP)": _stats(get_ms, floor)}
    if not floor_ms:
        raise SystemExit("no contact's last change spans the two instants: nothing was timed")
    load = [round(x, 2) for x in os.getloadavg()]
    return {"rows": rows, "contacts": len(ids), "rounds": args.rounds, "with_split": len(split_ms),
            "learned_split_null": unavailable,
            "parts_per_split_median": float(np.median(parts)) if parts else None,
            "events": len(events), "features": len(scorer.feature_names), "load": load}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="times each contact is asked")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    result = run_split(args)
    print_split(result)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2))
    return 0


def print_split(result: dict) -> None:
    print(f"{'':40} {'n':>5} {'median ms':>10} {'p90 ms':>8} {'p99 ms':>8} {'x floor':>8}")
    for name, row in result["rows"].items():
        print(f"{name:40} {row['n']:>5} {row['median_ms']:>10.3f} {row['p90_ms']:>8.3f} {row['p99_ms']:>8.3f} "
              f"{row['x_floor']:>8}")
    print(f"{result['contacts']} contacts x {result['rounds']} rounds, {result['events']:,} events, "
          f"{result['features']} features, {result['with_split']} requests with a learned split "
          f"(median {result['parts_per_split_median']} parts), {result['learned_split_null']} with none; "
          f"load average {'/'.join(map(str, result['load']))}")


if __name__ == "__main__":
    raise SystemExit(main())
