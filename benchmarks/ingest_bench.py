"""Speed of file ingest: what row hashing (canonical JSON properties, identical rows) costs.

Not a test. Run from the repository root::

    python benchmarks/ingest_bench.py                # 1M rows, 3 repeats
    python benchmarks/ingest_bench.py --rows 200000 --repeats 1

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
import statistics
import subprocess
import sys
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
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
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
