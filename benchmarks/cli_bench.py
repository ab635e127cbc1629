"""What a person waits for at the command line (issue 14): --help, --version, explain, score.

Not a test. Run from the repository root::

    python benchmarks/cli_bench.py                    # 20k-contact demo workspace, 5 repeats
    python benchmarks/cli_bench.py --repeats 3 --contacts 5000

The demo workspace (``propensity demo --contacts N``) is built once and cached under
``benchmarks/.cache/`` (gitignored); delete it to rebuild. Each command runs as a fresh process
(cold: imports, model load and all), hyperfine-style: one warm-up run (the OS file cache), then
the median of ``--repeats`` wall times. Beside each, its floor measured in the same run:

* ``python -c pass`` for --help and --version (the interpreter's own start);
* LightGBM ``pred_contrib`` on one row of the model's features for ``explain CONTACT``;
* the model's features built for the whole spine (the columns its trees read, from the kept
  compiled query: ``training/as_trained_sql.py``) + ``booster.predict`` for ``score --model``;
* and the rule score's own time, since ``score --model`` is asked to be <= rules + 1.5 s.

The load average (``os.getloadavg``) is printed and stored with every figure: on a shared
machine the same command can take 2-3x as long. JSON goes to ``benchmarks/results/cli_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"
CLI = [sys.executable, "-m", "propensity.pipelines.cli"]

# The floors run in a child process too, so they pay the same imports a command does not (they
# time only the work inside, after the imports and the model load, which is what a floor is).
FLOOR_CHILD = r"""
import json, sys, time
from propensity.features.store import Workspace
from propensity.pipelines.project import Project
from propensity.pipelines.explain.jobs import default_as_of, model_features
from propensity.pipelines.jobs import SpineChoice, resolve_spine
from propensity.pipelines.training.model import prepare_matrix
from propensity.features.spine import spine_from_frame
import pandas as pd

ws = Workspace(sys.argv[1], read_only=True)
project = Project(ws)
scorer = project.model("champion").scorer
con = ws.ibis_connection()
as_of = default_as_of(ws)
out = {}
# explain's floor: pred_contrib on one row (its features already built)
one = spine_from_frame(con, pd.DataFrame({"contact_id": [sys.argv[2]], "as_of": [pd.Timestamp(as_of)]}))
frame = model_features(con, one, scorer, query_cache=ws.layout.query_cache)
matrix, _ = prepare_matrix(frame, scorer.feature_names, scorer.categories)
times = []
for _ in range(20):
    t = time.perf_counter(); scorer.booster.predict(matrix, pred_contrib=True, num_iteration=scorer.best_iteration)
    times.append(time.perf_counter() - t)
out["pred_contrib_one_row"] = sorted(times)[len(times) // 2]
# score's floor: the features `score --model` builds for the spine (the columns its trees read, the
# query compiled once and kept: training/as_trained_sql.py) + booster predict; timed the second time,
# so the floor never includes the one compile a first run pays
from propensity.features.history import history_table
from propensity.pipelines.training.as_trained_sql import features_frame_as_trained
for _ in range(2):
    t = time.perf_counter()
    spine = resolve_spine(con, SpineChoice(as_of=as_of, spine=None))
    frame = features_frame_as_trained(con.table("events"), spine, scorer, con.table("contacts"), history_table(con),
                                      folder=ws.layout.query_cache, columns=scorer.columns_read())
    frame = frame.reindex(columns=["contact_id", "as_of", *scorer.feature_names])
    matrix, _ = prepare_matrix(frame, scorer.feature_names, scorer.categories)
    scorer.booster.predict(matrix, num_iteration=scorer.best_iteration)
    out["features_and_predict"] = time.perf_counter() - t
out["rows"] = len(frame)
print(json.dumps(out))
"""


def load() -> float:
    return os.getloadavg()[0]


def timed(command: list[str], repeats: int, env: dict) -> dict:
    """Median wall and CPU time (user + system of the child) of ``repeats`` fresh processes after
    one warm-up run. On a shared machine the CPU time is the steadier figure: it is what the
    command costs, the wall time what it cost while others ran too."""
    import resource

    subprocess.run(command, check=True, capture_output=True, env=env)
    runs, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env)
        runs.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return {"median_s": statistics.median(runs), "best_s": min(runs), "cpu_s": statistics.median(cpus),
            "runs": runs, "cpu_runs": cpus, "load": load()}


def demo_workspace(contacts: int) -> Path:
    folder = CACHE / f"demo_{contacts // 1000}k"
    stamp = folder / ".bench-complete"
    if not stamp.exists():
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        print(f"building the demo workspace {folder} (once) ...", flush=True)
        subprocess.run([*CLI, "-w", str(folder), "demo", "--contacts", str(contacts)], check=True,
                       capture_output=True)
        stamp.write_text("ok\n")
    return folder


def a_contact(ws: Path) -> tuple[str, str]:
    """The contact with the most events, and the day after the last event (explain's default as_of)."""
    import duckdb

    con = duckdb.connect(str(ws / "propensity.duckdb"), read_only=True)
    try:
        contact = con.execute("select contact_id from events group by 1 order by count(*) desc, 1 limit 1").fetchone()[0]
        day = con.execute("select cast(max(ts) as date) + 1 from events").fetchone()[0]
        return contact, str(day)
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "cli_bench.json")
    parser.add_argument("--only", default="", help="comma-separated case names to run (default: all)")
    args = parser.parse_args()
    ws = demo_workspace(args.contacts)
    contact, as_of = a_contact(ws)
    env = {**os.environ, "PROPENSITY_WORKSPACE": str(ws)}
    out_dir = CACHE / "bench-out"
    out_dir.mkdir(parents=True, exist_ok=True)

    floors = {"python -c pass": timed([sys.executable, "-c", "pass"], args.repeats, env)}
    child = subprocess.run([sys.executable, "-c", FLOOR_CHILD, str(ws), contact], check=True,
                           capture_output=True, text=True, env=env)
    measured = json.loads(child.stdout.strip().splitlines()[-1])
    floors["pred_contrib, one row"] = {"median_s": measured["pred_contrib_one_row"], "load": load()}
    floors["features + booster predict"] = {"median_s": measured["features_and_predict"], "load": load(),
                                            "rows": measured["rows"]}
    cases = {
        "--help": ([*CLI, "--help"], "python -c pass", 0.5),
        "--version": ([*CLI, "--version"], "python -c pass", 0.5),
        "explain CONTACT": ([*CLI, "explain", contact], "pred_contrib, one row", 2.0),
        "score (rules)": ([*CLI, "score", "--as-of", as_of, "--out", str(out_dir / "rules.parquet")], None, None),
        "score --model champion": ([*CLI, "score", "--model", "champion", "--as-of", as_of,
                                    "--out", str(out_dir / "model.parquet")], "features + booster predict", None),
    }
    only = {c.strip() for c in args.only.split(",") if c.strip()}
    results = {}
    for name, (command, _, _) in cases.items():
        if only and name not in only:
            continue
        results[name] = timed(command, args.repeats, env)
    if "score (rules)" in results and "score --model champion" in results:
        cases["score --model champion"] = (*cases["score --model champion"][:2],
                                           results["score (rules)"]["median_s"] + 1.5)

    print(f"\n{args.contacts:,}-contact demo workspace, contact {contact}, {args.repeats} repeats; "
          f"load average {load():.2f} (2 cores)")
    print(f"{'command':<26} {'median s':>9} {'best s':>7} {'CPU s':>6} {'floor':<28} {'floor s':>8} {'ratio':>7} "
          f"{'target s':>8} {'load':>5}")
    rows = []
    for name, result in results.items():
        _, floor_name, target = cases[name]
        floor = floors.get(floor_name) if floor_name else None
        ratio = result["median_s"] / floor["median_s"] if floor and floor["median_s"] > 0 else None
        print(f"{name:<26} {result['median_s']:>9.2f} {result['best_s']:>7.2f} {result['cpu_s']:>6.2f} {floor_name or '-':<28} "
              f"{floor['median_s'] if floor else float('nan'):>8.3f} {ratio or float('nan'):>7.1f} "
              f"{target or float('nan'):>8.2f} {result['load']:>5.2f}")
        rows.append({"command": name, **result, "floor": floor_name, "floor_s": floor["median_s"] if floor else None,
                     "ratio": ratio, "target_s": target})
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"contacts": args.contacts, "contact": contact, "repeats": args.repeats,
                                        "cores": os.cpu_count(), "floors": floors, "results": rows,
                                        "load_after": load()}, indent=2) + "\n")
    print(f"-> {args.results}")


if __name__ == "__main__":
    main()
