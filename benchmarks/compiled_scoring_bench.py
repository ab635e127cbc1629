"""Batch scoring throughput: the pyfunc's code path with LightGBM's predict vs compiled trees.

    python benchmarks/quality_bench.py --contacts 100000     # trains and saves a scorer + test features
    python benchmarks/compiled_scoring_bench.py --scorer DIR [--rows 1000000]

``DIR`` is a folder written by ``LearnedScorer.save`` holding ``features.parquet`` (what
quality_bench saves). Rows are the saved feature rows repeated up to ``--rows``. Timed: the
MLflow pyfunc's ``predict`` (``PropensityPyfunc``, the code a registered model runs) with
LightGBM's own predict, the same with compiled trees (extra [fast]), and ``booster.predict`` on
the prepared float64 array (the reference of the ratio). Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results" / "compiled_scoring_bench.json"


def _best_of(fn, repeats: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    order = np.argsort(walls)
    median = order[len(order) // 2]
    return walls[median], cpus[median]


def _through_the_registry(scorer, example: pd.DataFrame, frame: pd.DataFrame, record) -> dict[str, float]:
    """Log the scorer to a throwaway MLflow store, load ``models:/…`` as a user would, and time it
    (MLflow's own wrapper checks the input schema on every call)."""
    import tempfile

    import mlflow

    from pipelines.training.compiled import ENV_VAR
    from pipelines.training.tracking import configure_tracking, log_scorer_model

    configure_tracking(Path(tempfile.mkdtemp(prefix="compiled-bench-")), None, "compiled-bench")
    with mlflow.start_run():
        _, version = log_scorer_model(scorer, example.head(50), "compiled-bench")
    out = {}
    for key, flag in (("plain", "0"), ("compiled", "1")):
        os.environ[ENV_VAR] = flag  # read when the pyfunc loads
        model = mlflow.pyfunc.load_model(f"models:/compiled-bench/{version}")
        label = "compiled trees" if flag == "1" else "LightGBM predict"
        out[key] = record(f"mlflow models:/ pyfunc ({label})", lambda m=model: m.predict(frame))
    os.environ.pop(ENV_VAR, None)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scorer", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from pipelines.training.model import model_array
    from pipelines.training.scorer import load_scorer
    from pipelines.training.tracking import PropensityPyfunc

    scorer = load_scorer(args.scorer)
    saved = pd.read_parquet(args.scorer / "features.parquet")[scorer.feature_names]
    frame = pd.concat([saved] * (args.rows // len(saved) + 1), ignore_index=True).iloc[: args.rows]
    pyfunc = PropensityPyfunc()
    pyfunc.scorer = scorer
    matrix = model_array(frame, scorer.feature_names, scorer.categories)
    rows = []

    def record(name: str, fn) -> float:
        fn()  # warm: first-call costs (allocations, thread pool) are not throughput
        wall, cpu = _best_of(fn, args.repeats)
        rows.append({"name": name, "rows": len(frame), "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                     "rows_per_s": round(len(frame) / wall)})
        return wall

    booster = record("booster.predict(float64 array)",
                     lambda: scorer.booster.predict(matrix, num_iteration=scorer.best_iteration))
    plain_scores = pyfunc.predict(None, frame)
    plain = record("pyfunc.predict (LightGBM predict)", lambda: pyfunc.predict(None, frame))
    started = time.perf_counter()
    scorer.compile_trees()
    compile_s = time.perf_counter() - started
    compiled_scores = pyfunc.predict(None, frame)
    compiled = record("pyfunc.predict (compiled trees)", lambda: pyfunc.predict(None, frame))
    max_diff = float(np.abs(compiled_scores["probability"] - plain_scores["probability"]).max())
    registry = _through_the_registry(scorer, saved, frame, record)
    summary = {
        "trees": scorer.booster.num_trees(), "features": len(scorer.feature_names),
        "compile_seconds": round(compile_s, 1), "max_abs_probability_diff": max_diff,
        "ratio_pyfunc_to_booster": round(plain / booster, 2),
        "ratio_compiled_pyfunc_to_booster": round(compiled / booster, 2),
        "target_rows_per_s": 200_000, "met_compiled": len(frame) / compiled >= 200_000,
        "ratio_registered_pyfunc_to_booster": round(registry["plain"] / booster, 2),
        "registered_compiled_rows_per_s": round(len(frame) / registry["compiled"]),
    }
    print(f"\nmodel: {summary['trees']} trees, {summary['features']} features; compile {compile_s:.1f} s; "
          f"max |probability diff| compiled vs LightGBM {max_diff:.1e}")
    print(f"{'path':<46}{'rows':>10}{'wall s':>9}{'CPU s':>8}{'rows/s':>11}")
    for r in rows:
        print(f"{r['name']:<46}{r['rows']:>10,}{r['wall_s']:>9.2f}{r['cpu_s']:>8.2f}{r['rows_per_s']:>11,}")
    print(f"pyfunc / booster.predict: {summary['ratio_pyfunc_to_booster']}x (LightGBM), "
          f"{summary['ratio_compiled_pyfunc_to_booster']}x (compiled); target >= 200k rows/s: "
          f"{'met' if summary['met_compiled'] else 'NOT met'} with compiled trees")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "scorer": str(args.scorer), "rows": rows, "summary": summary,
    }, indent=2))
    print(f"-> {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
