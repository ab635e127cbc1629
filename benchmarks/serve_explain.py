"""What one ``GET /v1/contacts/{id}/explain`` costs, warm, beside its floor in the same run.

Not a test. Run from the repository root::

    python benchmarks/serve_explain.py                      # 200 contacts, each asked 5 times
    python benchmarks/serve_explain.py --contacts 100 --rounds 3

A synthetic world (2,500 contacts, 150 days) is trained with the train config's defaults (the
default champion: it reads the rules' columns), as ``serve_split.py`` does; a real uvicorn server
(in a thread of this process, as the tests run it) serves it with the shipped SaaS rules, and
``--contacts`` contacts are sent through ``propensity backfill``'s calls. Then, warm (one request
first, not timed), sequentially on one keep-alive connection, per contact and round:

* ``GET /v1/contacts/{id}/explain`` over HTTP (the issue's target: p99 <= 50 ms);
* the same answer in process (``contact_routes.explain_body``: what the route computes, no HTTP);
* ``GET /v1/contacts/{id}/score?learned_split=false`` over HTTP, for comparison;
* the floor: LightGBM ``pred_contrib`` on the contact's one model row (a float matrix made
  before the clock starts, one thread), the trees alone.

The in-process rows are timed twice: wall clock, and the CPU time of the thread (``thread_time``),
which is what a request costs apart from the share of the cores other jobs take (on an idle
machine the two are close).

Prints a table (median, p90, p99 in ms, ratio of the median to the floor's, load average before
and after) and writes ``benchmarks/results/serve_explain.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_split  # beside this file: the trained world, the server in a thread, the statistics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serve_explain.json"
KEY = "bench-key"


def _floor_matrix(learned, contact: str, as_of, state):
    """The contact's model row as the float matrix LightGBM reads (built outside the timing)."""
    with learned.consistent():
        out, _ = learned.mirror.feature_arrays([contact], as_of)
    columns, _ = learned._rule_inputs([contact], as_of, {contact: state})
    return learned.model_matrix({**out, **columns})


def run_explain(args: argparse.Namespace) -> dict:
    import httpx
    import pandas as pd

    from propensity.pipelines.activation.backfill import backfill
    from propensity.pipelines.rules import load_rules
    from propensity.pipelines.serve.app import ServiceSettings, create_app
    from propensity.pipelines.serve.contact_routes import explain_body

    folder = Path(tempfile.mkdtemp(prefix="serve-explain."))
    started = time.perf_counter()
    ws, scorer = serve_split._trained(folder)
    print(f"trained the default champion in {time.perf_counter() - started:.0f} s "
          f"({len(scorer.feature_names)} features, rule_inputs: {scorer.rule_inputs is not None})", file=sys.stderr)
    con = ws.ibis_connection()
    contacts = con.table("contacts").execute()
    events = con.table("events").execute()
    now = pd.Timestamp(events["ts"].max()).to_pydatetime() + timedelta(hours=1)
    ids = sorted(contacts["contact_id"].astype(str))[: args.contacts]
    contacts = contacts[contacts["contact_id"].astype(str).isin(ids)]
    events = events[events["contact_id"].astype(str).isin(ids)].sort_values("ts", kind="stable")
    rules = load_rules(ROOT / "configs/rules/saas.yaml")
    settings = ServiceSettings(database_url=f"sqlite:///{folder / 'serve.db'}", rules=rules,
                               write_keys=frozenset({KEY}), model=scorer, model_label="explain-bench champion")
    app = create_app(settings, clock=lambda: now)
    server, thread, base = serve_split._serve(app)
    load_before = [round(x, 2) for x in os.getloadavg()]
    timings: dict[str, list[float]] = {"floor": [], "floor_cpu": [], "in_process": [], "in_process_cpu": [],
                                       "explain": [], "score": []}
    groups = []
    try:
        backfill(contacts, [events], base, KEY, batch_size=400)
        writer = app.state.runtime["writer"]
        learned = writer.learned
        booster, best = scorer.booster, scorer.best_iteration
        with httpx.Client(auth=(KEY, ""), timeout=60) as http:
            http.get(f"{base}/v1/contacts/{ids[0]}/explain").raise_for_status()  # warm: imports, first tree walk
            for _ in range(args.rounds):
                for contact in ids:
                    t = time.perf_counter()
                    answer = http.get(f"{base}/v1/contacts/{contact}/explain")
                    timings["explain"].append((time.perf_counter() - t) * 1000)
                    answer.raise_for_status()
                    groups.append(len(answer.json()["learned"]))
                    t = time.perf_counter()
                    http.get(f"{base}/v1/contacts/{contact}/score", params={"learned_split": "false"}).raise_for_status()
                    timings["score"].append((time.perf_counter() - t) * 1000)
                    view, entry = writer.current(contact)
                    t, cpu = time.perf_counter(), time.thread_time()
                    explain_body(learned, view, entry.state, rules, top=3, positive_only=False, model={})
                    timings["in_process"].append((time.perf_counter() - t) * 1000)
                    # this thread's CPU: what the answer costs without the other jobs' share of the cores
                    timings["in_process_cpu"].append((time.thread_time() - cpu) * 1000)
                    matrix = _floor_matrix(learned, contact, view.as_of, entry.state)
                    t, cpu = time.perf_counter(), time.thread_time()
                    booster.predict(matrix, pred_contrib=True, num_iteration=best, num_threads=1)
                    timings["floor"].append((time.perf_counter() - t) * 1000)
                    timings["floor_cpu"].append((time.thread_time() - cpu) * 1000)
    finally:
        server.should_exit = True
        thread.join(30)
    floor = float(np.median(timings["floor"]))
    rows = {"pred_contrib on one row (floor)": serve_split._stats(timings["floor"], floor),
            "pred_contrib on one row, CPU of the thread": serve_split._stats(timings["floor_cpu"], floor),
            "explain_body in process": serve_split._stats(timings["in_process"], floor),
            "explain_body in process, CPU of the thread": serve_split._stats(timings["in_process_cpu"], floor),
            "GET explain (HTTP)": serve_split._stats(timings["explain"], floor),
            "GET score, learned_split=false (HTTP)": serve_split._stats(timings["score"], floor)}
    return {"rows": rows, "contacts": len(ids), "rounds": args.rounds, "events": len(events),
            "features": len(scorer.feature_names), "groups_median": float(np.median(groups)),
            "target_p99_ms": 50.0, "load_before": load_before, "load": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count()}


def print_explain(result: dict) -> None:
    print(f"{'':44} {'n':>5} {'median ms':>10} {'p90 ms':>8} {'p99 ms':>8} {'x floor':>8}")
    for name, row in result["rows"].items():
        print(f"{name:44} {row['n']:>5} {row['median_ms']:>10.3f} {row['p90_ms']:>8.3f} {row['p99_ms']:>8.3f} "
              f"{row['x_floor']:>8}")
    p99 = result["rows"]["GET explain (HTTP)"]["p99_ms"]
    print(f"{result['contacts']} contacts x {result['rounds']} rounds, {result['events']:,} events, "
          f"{result['features']} features, median {result['groups_median']:.0f} groups; GET explain p99 "
          f"{p99:.1f} ms vs target {result['target_p99_ms']:.0f} ms; load average "
          f"{'/'.join(map(str, result['load_before']))} before, {'/'.join(map(str, result['load']))} after "
          f"({result['cpus']} CPUs)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5, help="times each contact is asked")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    result = run_explain(args)
    print_explain(result)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
