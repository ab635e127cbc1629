"""Scale benchmark: the feature build at 1M, 10M and 100M events, and how its cost grows.

Not a test. From the repository root::

    nice -n 10 python benchmarks/scale/scale_bench.py                      # DuckDB 1M, 10M; Spark 1M, 10M
    nice -n 10 python benchmarks/scale/scale_bench.py --sizes 1m,10m,100m  # + DuckDB 100M (long)
    python benchmarks/scale/scale_bench.py --engines duckdb --sizes 1m,10m

What is measured, per size and engine, in a fresh Python process each time:

- DuckDB: ``build_features`` (default FeatureConfig, contacts, account features, attributes;
  spine = every contact known at the end of the period, so every event is used) on the
  workspace DuckDB the synthetic world was ingested into, materialised with ``CREATE TABLE AS``.
  This is ``benchmarks/features_bench.py``'s ``build_ibis`` step (imported, not copied), and
  its synthetic worlds and workspaces under ``--workdir`` are reused when present.
- Spark (``local[2]`` unless ``--spark-master``/``SPARK_MASTER``): the same ``build_features``
  through ``propensity.pipelines.engines`` on the world's Parquet file, written with Spark to a Parquet
  folder (the at-scale path: no workspace, no ingest). Spark's time includes its query
  analysis and code generation, not the JVM start.

Peak RSS: DuckDB steps report the child's ``ru_maxrss`` (``os.wait4``); Spark steps add the
JVM, so they sample the RSS of the child and all its descendants every 0.2 s (psutil) and
report the largest sum. The growth exponent ``k`` is the least-squares slope of
log(wall time) on log(events) over the sizes run (time ~ events^k): ``k`` <= 1.1 means the
build scales about linearly. The targets (DuckDB): k <= 1.1, 100M events in under 5 minutes
with peak RSS under 8 GB, on 2 cores.

Results go to ``benchmarks/results/scale_bench.json`` (sections merged, machine facts and the
load average before and after every run).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # features_bench (its helpers are reused, not copied)

import features_bench as fb  # noqa: E402

REPO = fb.REPO
DEFAULT_JSON = REPO / "benchmarks" / "results" / "scale_bench.json"
SIZES = {"1m": 10_000, "10m": 100_000, "100m": 1_000_000}  # contacts x 180 days ~ 103 events each
TARGET_K = 1.1
TARGET_100M_SECONDS = 300
TARGET_100M_RSS_MB = 8 * 1024
TARGET_SPARK_10M_SECONDS = 60


# ============================================================================ child steps


class _PeakRss:
    """Largest RSS sum of this process and its descendants (the Spark JVM), sampled."""

    def __init__(self, interval: float = 0.2) -> None:
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def _tree_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its descendants: the JVMs too."""
    import psutil

    total = 0.0
    for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def step_build_spark(p: dict[str, Any]) -> dict[str, Any]:
    """build_features on Spark from the world's Parquet files, written to a Parquet folder.

    ``p["standalone"]``: on a master and a worker started here on loopback (their JVMs are
    this process's children, so the sampled RSS and the CPU time include them).
    """
    from propensity.features.build import build_features
    from propensity.features.config import FeatureConfig
    from propensity.features.spine import spine_at
    from propensity.pipelines.engines import EngineConfig, SparkSection, open_tables, spark_conf_summary

    data = Path(p["data"])
    conf = {"spark.driver.memory": p["driver_memory"]}
    cluster = None
    master = p.get("master")
    if p.get("standalone"):
        from propensity.pipelines.spark.standalone import StandaloneCluster

        cluster = StandaloneCluster(cores=p.get("standalone_cores", 2), memory=p["executor_memory"]).start()
        master = cluster.url
        conf = {**cluster.driver_conf(), **conf}
    spark = SparkSection(master=master, conf=conf)
    config = EngineConfig.model_validate({
        "engine": "spark",
        "sources": {"events": {"parquet": str(data / "events.parquet")},
                    "contacts": {"parquet": str(data / "contacts.parquet")}},
        "spark": spark.model_dump(),
    })
    out = Path(p["out"])
    shutil.rmtree(out, ignore_errors=True)
    try:
        with _PeakRss() as rss:
            tables = open_tables(config)  # the JVM starts here, outside the measured span
            cpu0 = _tree_cpu_seconds()
            with fb._Span() as span:
                spine = spine_at(tables.events, p["as_of"], tables.contacts)
                expr = build_features(tables.events, spine, FeatureConfig(), contacts=tables.contacts)
                tables.con.to_parquet_dir(expr, out)
            tree_cpu = _tree_cpu_seconds() - cpu0
            session = tables.session
            rows = session.read.parquet(str(out)).count()
            columns = len(session.read.parquet(str(out)).columns)
            events = session.sql(f"SELECT count(*) FROM events WHERE ts < TIMESTAMP '{p['as_of']}'").collect()[0][0]
            facts = dict(spark_conf_summary(session))
            session.stop()
    finally:
        if cluster is not None:
            cluster.stop()
    shutil.rmtree(out, ignore_errors=True)
    return {"rows": rows, "columns": columns, "events": int(events), "spark": facts,
            "sampled_peak_rss_mb": rss.peak / fb.MB, "seconds": span.seconds,
            "cpu_seconds": tree_cpu, "python_cpu_seconds": span.cpu_seconds}


STEPS = {**fb.STEPS, "build_spark": step_build_spark}


def child_main(step: str, params: str, out: str) -> int:
    result = STEPS[step](json.loads(params))
    Path(out).write_text(json.dumps(result, default=str))
    return 0


# ============================================================================ parent side


def run_child(step: str, params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """``features_bench.run_child`` on this script's child dispatcher; the peak RSS also counts
    the child's own sampled peak (Spark's JVM is not the child's resource usage)."""
    result = fb.run_child(step, params, workdir, script=Path(__file__))
    result["peak_rss_mb"] = max(result["peak_rss_mb"], result.get("sampled_peak_rss_mb", 0.0))
    fb._log(f"{step} {params.get('label', '')}: {result['seconds']:.1f} s, peak RSS "
            f"{result['peak_rss_mb']:,.0f} MB, load {result['load_after'][0]}")
    return result


def _workspace(args: argparse.Namespace, size: str, contacts: int, data: Path) -> Path:
    """A workspace holding the world (features_bench's, reused when it holds the same events)."""
    ws = args.workdir / ("ws_10m" if size == "10m" else "ws_100m" if size == "100m" else f"ws_{size}")
    meta = json.loads((data / "meta.json").read_text())
    if ws.exists() and not args.reingest:
        import duckdb

        try:
            with duckdb.connect(str(ws / "propensity.duckdb"), read_only=True) as con:
                n = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
        except duckdb.Error:
            n = -1
        if n == meta["events"]:
            fb._log(f"reusing workspace {ws} ({n:,} events)")
            return ws
    run_child("ingest", {"ws": str(ws), "data": str(data), "label": size}, args.workdir)
    return ws


def growth_exponent(events: list[float], seconds: list[float]) -> float | None:
    """Least-squares slope of log(seconds) on log(events)."""
    if len(events) < 2:
        return None
    xs, ys = [math.log(e) for e in events], [math.log(s) for s in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else None


def measure(args: argparse.Namespace) -> dict[str, Any]:
    as_of = fb._as_of(args)
    runs: dict[str, dict[str, Any]] = {}
    for size in args.sizes:
        contacts = SIZES[size]
        data, _ = fb._world(args, contacts)  # written once, reused afterwards
        for engine in args.engines:
            if engine == "spark" and size not in args.spark_sizes:
                continue
            label = f"{engine} {size}"
            if engine == "duckdb":
                ws = _workspace(args, size, contacts, data)
                limit = args.memory_limit_100m if size == "100m" else None
                p = {"ws": str(ws), "as_of": as_of, "memory_limit": limit, "accounts": True,
                     "attributes": True, "table": "bench_scale", "label": label}
                results = [run_child("build_ibis", p, args.workdir) for _ in range(args.repeats)]
                runs[label] = {"engine": engine, "size": size, **fb.summarize(results)}
                continue
            for deploy in args.spark_deploy:
                label = f"{engine} {size}" if deploy == "local" else f"{engine}_standalone {size}"
                p = {"data": str(data), "as_of": as_of, "master": args.spark_master,
                     "driver_memory": args.spark_driver_memory, "standalone": deploy == "standalone",
                     "executor_memory": args.spark_executor_memory,
                     "out": str(args.workdir / f"spark_features_{size}"), "label": label}
                results = [run_child("build_spark", p, args.workdir) for _ in range(args.repeats)]
                name = engine if deploy == "local" else f"{engine}_standalone"
                runs[label] = {"engine": name, "size": size, **fb.summarize(results)}
    return runs


def table_rows(runs: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows, fits = [], {}
    duck = {r["size"]: r for r in runs.values() if r["engine"] == "duckdb"}
    for engine in ("duckdb", "spark", "spark_standalone"):
        mine = [r for r in runs.values() if r["engine"] == engine]
        if not mine:
            continue
        k = growth_exponent([r["events"] for r in mine], [r["seconds_median"] for r in mine])
        fits[engine] = {"k": k, "sizes": [r["size"] for r in mine],
                        "met": None if k is None or engine != "duckdb" else k <= TARGET_K}
        for r in mine:
            target, met = "-", None
            if engine == "duckdb" and r["size"] == "100m":
                target = "< 300 s, RSS < 8 GB"
                met = r["seconds_median"] < TARGET_100M_SECONDS and r["peak_rss_mb"] < TARGET_100M_RSS_MB
            note = f"{r['rows']:,} rows x {r['columns']} cols; CPU {r['cpu_seconds_median']:.1f} s; load {r['load_all']}"
            if engine.startswith("spark"):
                target = "<= 60 s" if r["size"] == "10m" else "-"
                met = r["seconds_median"] <= TARGET_SPARK_10M_SECONDS if r["size"] == "10m" else None
                if r["size"] in duck:
                    d = duck[r["size"]]
                    note += (f"; vs DuckDB same data: {r['seconds_median'] / d['seconds_median']:.1f}x wall, "
                             f"{r['cpu_seconds_median'] / d['cpu_seconds_median']:.1f}x CPU")
            rows.append(fb.row(f"{engine} build_features {r['size']}", r, target=target, met=met, note=note))
        rows.append({"name": f"{engine}: growth exponent k (time ~ events^k)", "rows_or_events": None,
                     "wall_s_median": k if k is not None else float("nan"), "wall_s_best": float("nan"),
                     "events_per_s": None, "peak_rss_mb": 0, "target": "k <= 1.1" if engine == "duckdb" else "-",
                     "met": None if fits[engine]["met"] is None else ("yes" if fits[engine]["met"] else "no"),
                     "note": f"least squares on log-log over {', '.join(fits[engine]['sizes'])}"})
    return rows, fits


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    header = ["step", "events", "wall s (median)", "events/s", "peak RSS MB", "target", "met"]
    lines = [header]
    for r in rows:
        if "growth exponent" in r["name"]:
            k = r["wall_s_median"]
            lines.append([r["name"], "-", f"k = {k:.3f}" if k == k else "-", "-", "-", r["target"], r["met"] or "-"])
            continue
        lines.append([r["name"], f"{r['rows_or_events']:,}", f"{r['wall_s_median']:.1f}",
                      f"{r['events_per_s']:,}" if r["events_per_s"] else "-", f"{r['peak_rss_mb']:,}",
                      r["target"], r["met"] or "-"])
    widths = [max(len(str(x)) for x in col) for col in zip(*lines)]
    print(f"\n{title}")
    for line in lines:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
    for r in rows:
        if r.get("note") and "growth exponent" not in r["name"]:
            print(f"  - {r['name']}: {r['note']}")


def write_json(path: Path, runs: dict[str, Any], fits: dict[str, Any], rows: list[dict[str, Any]],
               machine: dict[str, Any], args: argparse.Namespace) -> None:
    doc: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    doc.setdefault("runs", {})
    for label, run in runs.items():
        doc["runs"][label] = {"machine": machine, **run}
    # k is refitted over every run kept in the file, so a later `--sizes 100m` run completes the fit
    _, all_fits = table_rows(doc["runs"])
    doc.update(benchmark="benchmarks/scale/scale_bench.py", updated=machine["date"], fits=all_fits,
               last_args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               targets={"duckdb_k": TARGET_K, "duckdb_100m_seconds": TARGET_100M_SECONDS,
                        "duckdb_100m_rss_mb": TARGET_100M_RSS_MB})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1m,10m", help="comma list of 1m,10m,100m")
    ap.add_argument("--engines", default="duckdb,spark", help="comma list of duckdb,spark")
    ap.add_argument("--spark-sizes", default="1m,10m", help="sizes run on Spark (of --sizes)")
    ap.add_argument("--spark-master", default=None, help="default: $SPARK_MASTER, else local[2]")
    ap.add_argument("--spark-driver-memory", default="6g")
    ap.add_argument("--spark-deploy", default="local",
                    help="comma list of local (local[2] or --spark-master) and standalone (a master and a "
                         "worker started on loopback for the run)")
    ap.add_argument("--spark-executor-memory", default="4g", help="the standalone worker's executor memory")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/propensity-bench"),
                    help="synthetic worlds and workspaces (shared with features_bench.py)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--memory-limit-100m", default="5GB", help="DuckDB memory_limit at 100M")
    ap.add_argument("--reingest", action="store_true", help="ingest again even if a workspace exists")
    ap.add_argument("--regenerate", action="store_true", help="rewrite the synthetic Parquet files")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--days", type=int, default=180)
    args = ap.parse_args(argv)
    args.sizes = [s for s in args.sizes.split(",") if s]
    args.engines = [e for e in args.engines.split(",") if e]
    args.spark_sizes = [s for s in args.spark_sizes.split(",") if s]
    args.spark_deploy = [s for s in args.spark_deploy.split(",") if s]
    unknown = set(args.sizes) - set(SIZES) or set(args.engines) - {"duckdb", "spark"}
    if unknown:
        ap.error(f"unknown sizes/engines: {sorted(unknown)}")
    args.workdir = args.workdir.resolve()
    if REPO in args.workdir.parents:
        ap.error("--workdir must be outside the repository")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        return child_main(*argv[1:4])
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    machine = fb.machine_facts()
    fb._log(f"machine: {machine['nproc']} cpus, {machine['uptime']}")
    runs = measure(args)
    write_json(args.json, runs, {}, [], machine, args)
    doc = json.loads(args.json.read_text())
    rows, fits = table_rows(doc["runs"])
    print_table(rows, f"feature build at scale ({machine['nproc']} cpus; {machine['uptime'].split('load')[-1]})")
    for engine, fit in fits.items():
        if fit["k"] is not None:
            print(f"{engine}: k = {fit['k']:.3f} over {', '.join(fit['sizes'])}")
    print(f"\nresults: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
