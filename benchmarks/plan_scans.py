"""Parquet scans in the Spark and the DuckDB plan of the default feature build.

Not a test (``tests/spark/test_plan_shape.py`` bounds the Spark count). From the repository root::

    python benchmarks/plan_scans.py                    # a 2k-contact synthetic world, written once
    python benchmarks/plan_scans.py --contacts 10000   # a bigger world (the plan does not change)
    python benchmarks/plan_scans.py --save-plans DIR   # also write both plans as text

What is counted: ``build_features`` (default FeatureConfig, contacts, attributes; with and
without account features) on ``spine_at`` the end of the period, over the world's Parquet
files, as ``propensity features --engine-config`` runs it: on Spark ``local[2]`` (or
``--spark-master``) and on DuckDB over the same files (``configs/engines/duckdb_parquet.yaml``'s
path). Each engine's physical plan is built, never run (see ``propensity.pipelines.plans``):
Spark computes, and reads the files for, every use of a shared subquery; DuckDB materialises
such CTEs. Also shown: the seconds Spark takes to analyse and plan the expression (on a shared
machine this moves with the load average, printed beside it).

Results go to ``benchmarks/results/plan_scans.json`` (entries keyed by ``--label``, merged).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import features_bench as fb  # its world writer and machine facts are reused

DEFAULT_JSON = fb.REPO / "benchmarks" / "results" / "plan_scans.json"


def _engine_config(engine: str, data: Path, master: str | None):
    from propensity.pipelines.engines import EngineConfig

    return EngineConfig.model_validate({
        "engine": engine,
        "sources": {"events": {"parquet": str(data / "events.parquet")},
                    "contacts": {"parquet": str(data / "contacts.parquet")}},
        "spark": {"master": master, "conf": {"spark.driver.memory": "2g"}},
    })


def _expr(tables, as_of: str, accounts: bool):
    from propensity.features.build import build_features
    from propensity.features.config import FeatureConfig
    from propensity.features.spine import spine_at

    config = FeatureConfig().model_copy(update={"account_features": accounts})
    spine = spine_at(tables.events, as_of, tables.contacts)
    return build_features(tables.events, spine, config, contacts=tables.contacts)


def measure(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from propensity.pipelines.engines import open_tables
    from propensity.pipelines.plans import duckdb_plan_scans, spark_plan_scans

    as_of = fb._as_of(args)
    columns = {name: set(pq.read_schema(data / f"{name}.parquet").names) for name in ("contacts", "events")}
    out: dict[str, Any] = {"as_of": as_of, "data": str(data), "variants": {}}
    duck = open_tables(_engine_config("duckdb", data, None))
    spark = open_tables(_engine_config("spark", data, args.spark_master))
    out["spark_master"] = spark.session.sparkContext.master
    for label, accounts in (("full", True), ("no_accounts", False)):
        d = duckdb_plan_scans(duck.con, _expr(duck, as_of, accounts), columns)
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        expr = _expr(spark, as_of, accounts)
        built = time.perf_counter() - t0
        s = spark_plan_scans(spark.con, expr)
        planned = time.perf_counter() - t0 - built
        out["variants"][label] = {
            "duckdb": {"scans": d.scans, "by_source": d.by_source, "materialised_ctes": d.materialised,
                       "cte_scans": d.reused},
            "spark": {"scans": s.scans, "by_source": s.by_source, "reused_exchanges": s.reused,
                      "expression_seconds": round(built, 2), "plan_seconds": round(planned, 2),
                      "plan_chars": len(s.plan), "load_before": round(load, 2)},
        }
        if args.save_plans:
            args.save_plans.mkdir(parents=True, exist_ok=True)
            (args.save_plans / f"spark_{label}.txt").write_text(s.plan)
            (args.save_plans / f"duckdb_{label}.json").write_text(d.plan)
    spark.session.stop()
    return out


def print_table(result: dict[str, Any], uptime: str) -> None:
    print(f"\nParquet scans in the plan of build_features (default config, spine_at {result['as_of']}); "
          f"Spark master {result['spark_master']}; {uptime.split('load')[-1].strip()}")
    header = ["variant", "engine", "scans", "events", "contacts", "reuse", "Spark plan s"]
    lines = [header]
    for label, v in result["variants"].items():
        for engine in ("duckdb", "spark"):
            r = v[engine]
            reuse = (f"{r['materialised_ctes']} CTEs, {r['cte_scans']} CTE scans" if engine == "duckdb"
                     else f"{r['reused_exchanges']} reused exchanges")
            secs = f"{r['plan_seconds']:.1f} (load {r['load_before']})" if engine == "spark" else "-"
            lines.append([label, engine, str(r["scans"]), str(r["by_source"].get("events", 0)),
                          str(r["by_source"].get("contacts", 0)), reuse, secs])
        ratio = v["spark"]["scans"] / max(v["duckdb"]["scans"], 1)
        lines.append([label, "spark / duckdb", f"{ratio:.2f}x", "", "", "", ""])
    widths = [max(len(x) for x in col) for col in zip(*lines)]
    for line in lines:
        print("  ".join(x.ljust(w) for x, w in zip(line, widths)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--contacts", type=int, default=2_000)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/propensity-bench"))
    ap.add_argument("--spark-master", default=None, help="default: $SPARK_MASTER, else local[2]")
    ap.add_argument("--label", default="latest", help="key of this run in the JSON (e.g. before, after)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--save-plans", type=Path, default=None)
    args = ap.parse_args(argv)
    args.regenerate = False
    args.workdir = args.workdir.resolve()
    if fb.REPO in args.workdir.parents or args.workdir == fb.REPO:
        ap.error("--workdir must be outside the repository")
    args.workdir.mkdir(parents=True, exist_ok=True)
    data, _ = fb._world(args, args.contacts)
    machine = fb.machine_facts()
    result = measure(args, data)
    uptime = fb.machine_facts()["uptime"]
    doc = json.loads(args.json.read_text()) if args.json.exists() else {}
    doc.setdefault("runs", {})[args.label] = {"machine": machine, "uptime_end": uptime,
                                              "contacts": args.contacts, **result}
    doc.update(benchmark="benchmarks/plan_scans.py", updated=machine["date"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print_table(result, uptime)
    print(f"\nresults: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
