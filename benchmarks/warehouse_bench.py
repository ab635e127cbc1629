"""Speed of a warehouse engine (PostgreSQL) against the embedded DuckDB, on the same world.

Not a test. Needs a PostgreSQL server (``--database-url``, else ``$PROPENSITY_TEST_DATABASE_URL``;
``bash .ci/postgres.sh start /tmp/pg`` prints one) and the postgres extra::

    python benchmarks/warehouse_bench.py --contacts 5000 --repeats 3

Steps, each timed in this process (median wall time of ``--repeats``, best in brackets), the
load average printed beside them:

1. ``engine load``: the workspace's tables copied into a fresh database (``COPY``), against Ibis'
   own ``create_table`` from Arrow (one INSERT per row) on the first ``--insert-rows`` events;
2. features of every contact known at the cut-off (the shipped ``configs/features.yaml``) on
   PostgreSQL vs DuckDB, outputs compared;
3. rule scores (``configs/rules/saas.yaml``) on both, compared.

The floor of each comparison is DuckDB's time (the embedded default); the ratio says how much
slower the same expressions run on a local PostgreSQL. Writes ``benchmarks/results/warehouse_bench.json``.
Temporary data goes under ``--workdir`` (default /tmp/propensity-warehouse-bench).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.spark.compare, tests.pipelines.serve.support
DEFAULT_JSON = REPO / "benchmarks" / "results" / "warehouse_bench.json"
URL_ENV = "PROPENSITY_BENCH_ENGINE_URL"


def _timed(step, repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = step()
        times.append(time.perf_counter() - start)
    return times, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("PROPENSITY_TEST_DATABASE_URL"))
    parser.add_argument("--contacts", type=int, default=5000)
    parser.add_argument("--days", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--insert-rows", type=int, default=20_000)
    parser.add_argument("--as-of", default="2025-05-01")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/propensity-warehouse-bench"))
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("give --database-url or set $PROPENSITY_TEST_DATABASE_URL (bash .ci/postgres.sh start DIR)")

    import ibis
    import pandas as pd

    from propensity.features.build import build_features
    from propensity.features.config import load_feature_config
    from propensity.features.spine import spine_at
    from propensity.features.store import Workspace, ingest_file
    from propensity.pipelines.engines import EngineConfig, load_into_engine, open_tables
    from propensity.pipelines.jobs import SpineChoice, run_rule_scores
    from propensity.pipelines.rules import load_rules
    from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world
    from propensity.pipelines.warehouse import connect_warehouse
    from tests.pipelines.serve.support import fresh_postgres_database
    from tests.spark.compare import assert_same_table

    shutil.rmtree(args.workdir, ignore_errors=True)
    paths = write_world(generate_world(WorldConfig(contacts=args.contacts, days=args.days, seed=3)),
                        args.workdir / "data")
    ws = Workspace(args.workdir / "ws")
    for kind in ("contacts", "events", "outcomes"):
        ingest_file(ws, kind, paths[kind])
    counts = ws.counts()
    duck = ws.ibis_connection()
    config = load_feature_config(REPO / "configs" / "features.yaml")
    rules = load_rules(REPO / "configs" / "rules" / "saas.yaml")
    rows: list[dict] = []

    def record(step: str, engine: str, times: list[float], floor: float | None = None) -> None:
        median = statistics.median(times)
        rows.append({"step": step, "engine": engine, "median_s": round(median, 3), "best_s": round(min(times), 3),
                     "ratio_to_floor": None if floor is None else round(median / floor, 2),
                     "load_average": round(os.getloadavg()[0], 2)})

    with fresh_postgres_database(args.database_url) as url:
        os.environ[URL_ENV] = url
        engine = EngineConfig(engine="postgres", url_env=URL_ENV)
        times, _ = _timed(lambda: load_into_engine(ws, engine, replace=True), args.repeats)
        record(f"engine load ({counts['events']:,} events, COPY)", "postgres", times)
        sample = duck.table("events").limit(args.insert_rows).to_pyarrow()
        con = connect_warehouse("postgres", URL_ENV)
        times, _ = _timed(lambda: con.create_table("insert_sample", sample, overwrite=True), 1)
        per_row_copy = rows[0]["median_s"] / counts["events"]  # the floor: COPY's time for as many rows
        record(f"Ibis create_table ({len(sample):,} events, INSERT per row)", "postgres", times,
               floor=per_row_copy * len(sample))
        con.disconnect()

        tables = open_tables(engine)

        def features_on(events, contacts):
            return build_features(events, spine_at(events, args.as_of, contacts), config, contacts=contacts).execute()

        duck_times, expected = _timed(lambda: features_on(duck.table("events"), duck.table("contacts")), args.repeats)
        pg_times, actual = _timed(lambda: features_on(tables.events, tables.contacts), args.repeats)
        assert_same_table(expected, actual)
        record(f"features ({len(expected):,} contacts x {expected.shape[1]} columns)", "duckdb", duck_times)
        record("features", "postgres", pg_times, floor=statistics.median(duck_times))

        choice = SpineChoice(as_of=pd.Timestamp(args.as_of).to_pydatetime())
        duck_times, expected = _timed(lambda: run_rule_scores(ws, choice, rules), args.repeats)
        pg_times, actual = _timed(lambda: run_rule_scores(ws, choice, rules, tables=tables), args.repeats)
        assert_same_table(expected, actual)
        record("rule scores", "duckdb", duck_times)
        record("rule scores", "postgres", pg_times, floor=statistics.median(duck_times))
        tables.con.disconnect()
    del os.environ[URL_ENV]

    print(f"{'step':<58} {'engine':<9} {'median s':>9} {'best s':>8} {'x floor':>8} {'load':>5}")
    for row in rows:
        ratio = "" if row["ratio_to_floor"] is None else f"{row['ratio_to_floor']:.2f}"
        print(f"{row['step']:<58} {row['engine']:<9} {row['median_s']:>9.3f} {row['best_s']:>8.3f} {ratio:>8} "
              f"{row['load_average']:>5.2f}")
    out = {"when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": platform.machine(),
           "cpus": os.cpu_count(), "ibis": ibis.__version__, "contacts": args.contacts, "days": args.days,
           "events": counts["events"], "repeats": args.repeats, "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"-> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
