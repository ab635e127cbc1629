"""Speed of file ingest: what row hashing (canonical JSON properties, identical rows) costs.

Not a test. Run from the repository root::

    python benchmarks/ingest_bench.py                # 1M rows, 3 repeats
    python benchmarks/ingest_bench.py --rows 200000 --repeats 1

``--parquet-events N`` (issue 14) adds the synthetic world's events (with ids, ~N rows, written
once to ``--workdir`` by ``features_bench.step_write_parquet``) ingested from Parquet, validated,
beside its floor measured in the same run: DuckDB ``INSERT INTO events SELECT`` of the same
Parquet's columns into a fresh workspace's table (no checks, no dedupe, no rejects)::

    python benchmarks/ingest_bench.py --parquet-events 10000000 --repeats 3 --skip-small

Cases (each ingested into a fresh workspace, in a fresh subprocess, median wall time of the
repeats): a CSV without ``event_id`` whose extra columns fold into ``properties`` (so every row
is hashed through ``canonical_json``, 3,000 distinct property objects); the same with every
properties object distinct (the cache of canonical texts never hits); the same rows with an
``event_id`` (nothing hashed); and a Parquet file without ids. Temporary files go under
``--workdir`` (default /tmp/propensity-ingest-bench).
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

import numpy as np
import pandas as pd

CHILD = """
import sys, time, tempfile, shutil
from propensity.features.store import Workspace, ingest_file
folder = tempfile.mkdtemp(dir=sys.argv[2])
started = time.perf_counter()
report = ingest_file(Workspace(folder), "events", sys.argv[1], now="2026-01-01")
print(time.perf_counter() - started, report.loaded, getattr(report, "identical", 0))  # (older code: none)
shutil.rmtree(folder)
"""


# Both children time only the ingest (imports and the empty workspace are made first) and report
# CPU time beside wall time: on a shared machine the CPU time is the steadier figure.
PARQUET_CHILD = """
import json, os, sys, time, tempfile, shutil
from propensity.features.store import Workspace, ingest_file
folder = tempfile.mkdtemp(dir=sys.argv[2])
ws = Workspace(folder)
ws.connect().close()  # the empty tables
started, cpu = time.perf_counter(), os.times()
report = ingest_file(ws, "events", sys.argv[1], now="2030-01-01")
done = os.times()
print(json.dumps({"seconds": time.perf_counter() - started, "loaded": report.loaded, "rejected": report.rejected,
                  "cpu_seconds": done.user + done.system - cpu.user - cpu.system}))
shutil.rmtree(folder)
"""

FLOOR_CHILD = """
import json, os, sys, time, tempfile, shutil
from propensity.features.store import Workspace
folder = tempfile.mkdtemp(dir=sys.argv[2])
ws = Workspace(folder)
con = ws.connect()
con.execute("SET preserve_insertion_order = false")  # as ingest sets it
path = sys.argv[1].replace("'", "''")
started, cpu = time.perf_counter(), os.times()
con.execute("INSERT INTO events (event_id, contact_id, event_type, ts, value, account_id, properties) "
            "SELECT event_id, contact_id, event_type, ts, value, account_id, properties "
            f"FROM read_parquet('{path}')")
done = os.times()
loaded = con.execute("SELECT count(*) FROM events").fetchone()[0]
con.close()
print(json.dumps({"seconds": time.perf_counter() - started, "loaded": loaded, "rejected": 0,
                  "cpu_seconds": done.user + done.system - cpu.user - cpu.system}))
shutil.rmtree(folder)
"""


def world_parquet(events: int, workdir: Path) -> Path:
    """The synthetic world's events.parquet of about ``events`` rows (written once, then reused).

    Written chunk by chunk of contacts (``iter_event_chunks``: bounded memory; concatenated, the
    chunks are ``generate_world``'s events).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from propensity.pipelines.synthetic import WorldConfig, iter_event_chunks

    contacts = max(1000, events // 100)  # ~100 events per contact over 180 days
    out = workdir / f"world_{contacts}"
    path = out / "events.parquet"
    if not (out / "done").exists():
        print(f"writing {path} (once) ...", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        writer = None
        for chunk in iter_event_chunks(WorldConfig(contacts=contacts, days=180, seed=0), chunk_contacts=16_384):
            table = pa.Table.from_pandas(chunk, preserve_index=False)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
        writer.close()
        (out / "done").write_text("ok\n")
    return path


def parquet_case(path: Path, repeats: int, workdir: Path) -> dict:
    def run(child: str) -> dict:
        runs = []
        for _ in range(repeats):
            out = subprocess.run([sys.executable, "-c", child, str(path), str(workdir)], check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]
            runs.append(json.loads(out) | {"load": os.getloadavg()[0]})
        middle = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
        return {"median_s": middle["seconds"], "cpu_s": statistics.median(r["cpu_seconds"] for r in runs),
                "loaded": middle["loaded"], "rejected": middle["rejected"], "runs": runs}

    ingest = run(PARQUET_CHILD)
    floor = run(FLOOR_CHILD)
    events = floor["loaded"]
    print(f"\nParquet, {events:,} events with ids, median of {repeats}; load average {os.getloadavg()[0]:.2f} (2 cores)")
    print(f"{'':<38} {'wall s':>7} {'CPU s':>6} {'events/s':>11} {'loaded':>11}")
    for name, r in (("ingest_file (validated)", ingest), ("floor: INSERT ... SELECT read_parquet", floor)):
        print(f"{name:<38} {r['median_s']:>7.2f} {r['cpu_s']:>6.2f} {events / r['median_s']:>11,.0f} {r['loaded']:>11,}")
    ratio, cpu_ratio = ingest["median_s"] / floor["median_s"], ingest["cpu_s"] / floor["cpu_s"]
    print(f"ratio to the floor: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU; target >= 5M events/s: "
          f"{events / ingest['median_s']:,.0f} ({'met' if events / ingest['median_s'] >= 5e6 else 'not met'})")
    return {"events": events, "ingest": ingest, "floor": floor, "ratio_wall": ratio, "ratio_cpu": cpu_ratio,
            "events_per_s": events / ingest["median_s"], "events_per_cpu_s": events / ingest["cpu_s"]}


def make_files(rows: int, workdir: Path) -> dict[str, Path]:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({
        "contact_id": rng.integers(0, 50_000, rows).astype(str),
        "event_type": rng.choice(["view", "click", "buy"], rows),
        "ts": (pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 200 * 86400, rows), unit="s")).astype(str),
        "page": rng.choice(["/a", "/b", "/pricing"], rows),
        "ref": rng.integers(0, 1000, rows),
    })
    files = {
        "csv, no id, 3k distinct properties": workdir / "repeated.csv",
        "csv, no id, every properties distinct": workdir / "distinct.csv",
        "csv, event_id given": workdir / "with_id.csv",
        "parquet, no id, properties column": workdir / "repeated.parquet",
    }
    frame.to_csv(files["csv, no id, 3k distinct properties"], index=False)
    frame.assign(ref=np.arange(rows)).to_csv(files["csv, no id, every properties distinct"], index=False)
    frame.assign(event_id=[f"e{i}" for i in range(rows)]).to_csv(files["csv, event_id given"], index=False)
    frame.assign(properties=[json.dumps({"ref": int(r), "page": p}) for p, r in zip(frame.page, frame.ref)]).drop(
        columns=["page", "ref"]).to_parquet(files["parquet, no id, properties column"])
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/propensity-ingest-bench"))
    parser.add_argument("--parquet-events", type=int, default=0,
                        help="also ingest ~N synthetic world events from Parquet beside the INSERT floor")
    parser.add_argument("--skip-small", action="store_true", help="only the --parquet-events case")
    parser.add_argument("--results", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "ingest_bench.json")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.parquet_events:
        result = parquet_case(world_parquet(args.parquet_events, args.workdir), args.repeats, args.workdir)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps({"parquet": result, "repeats": args.repeats, "cores": os.cpu_count(),
                                            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                                           indent=2) + "\n")
        print(f"-> {args.results}")
    if args.skip_small:
        return
    files = make_files(args.rows, args.workdir)
    print(f"{'case':<42} {'median s':>9} {'best s':>7} {'rows/s':>11} {'identical':>9}")
    for case, path in files.items():
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(args.workdir)], check=True,
                                 capture_output=True, text=True).stdout.split()[-3:]  # (after DuckDB's progress bar)
            runs.append((float(out[0]), int(out[2])))
        median = statistics.median(t for t, _ in runs)
        print(f"{case:<42} {median:>9.2f} {min(t for t, _ in runs):>7.2f} {args.rows / median:>11,.0f} "
              f"{runs[0][1]:>9,}")


if __name__ == "__main__":
    main()
