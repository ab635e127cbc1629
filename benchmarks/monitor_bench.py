"""Cost of `propensity monitor`: a full measurement against a weekly run that appends one cut-off.

Not a test. Run from the repository root::

    python benchmarks/monitor_bench.py                    # 10,000 contacts
    python benchmarks/monitor_bench.py --contacts 20000

A shifted synthetic world (pipelines/synthetic/shift.py, 151 days) is ingested up to 2025-04-19,
a champion trained on it (no MLflow tracking, LightGBM defaults), then the rest is ingested in two
drops. Timed:

1. ``first run``: the reference, the drift profile of the training rows and every closed cut-off
   after the first drop (what the first `propensity monitor` of a workspace pays);
2. ``weekly run``: after one more week of data, the one new closed cut-off (and the open one);
3. ``floor``: one feature build of the same rows as the weekly run, as the champion was trained
   (``features_as_trained``): the part of the work no monitor can skip.

Prints a table with the ratio of each to the floor and writes ``benchmarks/results/monitor_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from propensity.features.store import Workspace, ingest_file
    from propensity.pipelines.compare.evaluation import EvaluationData
    from propensity.pipelines.monitor.jobs import MonitorInputs, _features, run_monitor
    from propensity.pipelines.rules.config import load_rules
    from propensity.pipelines.synthetic import WorldConfig
    from propensity.pipelines.synthetic.shift import ShiftConfig, generate_shifted_world
    from propensity.pipelines.training.config import load_train_config
    from propensity.pipelines.training.train import train

    world = generate_shifted_world(WorldConfig(contacts=args.contacts, days=151, seed=args.seed, preexisting_share=1.0),
                                   ShiftConfig(change_day=129))
    bounds = [pd.Timestamp.min, pd.Timestamp("2025-04-19"), pd.Timestamp("2025-05-17"), pd.Timestamp("2025-05-24"),
              pd.Timestamp.max]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        ws = Workspace(folder / "ws")
        world.contacts.to_parquet(folder / "contacts.parquet")
        ingest_file(ws, "contacts", folder / "contacts.parquet")

        def drop(i: int) -> None:
            for kind in ("events", "outcomes"):
                frame = getattr(world, kind)
                path = folder / f"{kind}_{i}.parquet"
                frame[(frame["ts"] >= bounds[i]) & (frame["ts"] < bounds[i + 1])].to_parquet(path)
                ingest_file(ws, kind, path)

        drop(0)
        config = {"rules": str(ROOT / "configs/rules/saas.yaml"), "features": str(ROOT / "configs/features.yaml"),
                  "grid": {"first": "2025-03-01", "last": "2025-04-05", "step_days": 7}, "horizon_days": 14,
                  "model": {"tune": False, "n_trials": 1, "timeout_seconds": 900, "seed": 0},
                  "min_positives": 20, "points_only_below": 20,
                  "mlflow": {"experiment": "monitor-bench", "model_name": "monitor-bench"}}
        (folder / "train.yaml").write_text(yaml.safe_dump(config))
        train_config = load_train_config(folder / "train.yaml")
        trained = train(ws, train_config, track=False)
        inputs = MonitorInputs(train_config=train_config, rules=load_rules(train_config.rules),
                               rules_path=Path(train_config.rules), points=trained.learned_rules,
                               points_path=trained.learned_rules_path, scorer=trained.scorer, model_label="bench")
        drop(1)
        started = time.perf_counter()
        first = run_monitor(ws, inputs)
        first_s = time.perf_counter() - started
        drop(2)
        started = time.perf_counter()
        weekly = run_monitor(ws, inputs)
        weekly_s = time.perf_counter() - started
        new = weekly.series["cutoffs"][weekly.computed[-1]] if weekly.computed else None
        rows = 0 if new is None else new["n"] + (weekly.open_cutoff or {}).get("n", 0)
        # the floor: the champion's features for as many rows as the weekly run scored
        data = EvaluationData.from_workspace(ws)
        spine = pd.DataFrame({"contact_id": world.contacts["contact_id"].iloc[:rows].to_numpy(),
                              "as_of": pd.Timestamp(weekly.computed[-1]) if weekly.computed else pd.Timestamp("2025-05-03")})
        spine["as_of"] = spine["as_of"].astype("datetime64[us]")
        started = time.perf_counter()
        _features(data, spine, trained.scorer, "_bench_spine")
        floor_s = time.perf_counter() - started

    load = os.getloadavg()[0]
    table = [
        {"stage": "first run", "cutoffs": len(first.computed), "seconds": first_s},
        {"stage": "weekly run", "cutoffs": len(weekly.computed), "seconds": weekly_s},
        {"stage": "floor (features of the weekly rows)", "cutoffs": 1, "seconds": floor_s},
    ]
    print(f"monitor, {args.contacts:,} contacts, {rows:,} rows in the weekly run, load average {load:.1f}")
    print(f"{'stage':<40}{'cut-offs':>10}{'seconds':>10}{'x floor':>10}")
    for row in table:
        row["ratio_to_floor"] = row["seconds"] / floor_s if floor_s else None
        print(f"{row['stage']:<40}{row['cutoffs']:>10}{row['seconds']:>10.2f}{row['ratio_to_floor']:>10.1f}")
    out = ROOT / "benchmarks" / "results" / "monitor_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"contacts": args.contacts, "rows_weekly": rows, "load_average": load,
                               "stages": table}, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
