"""What point-in-time attributes cost: the feature build with the contacts' latest values against the
build that reads each row's attributes as of its cut-off from the attribute history.

Not a test. Run from the repository root::

    python benchmarks/attribute_history_bench.py                      # 50k contacts x 120 days, 4 cut-offs
    python benchmarks/attribute_history_bench.py --contacts 100000 --repeats 5

A synthetic world is ingested into a fresh workspace, then a second contacts file in which a share
of the contacts (``--changed``) moved industry and plan, dated in the middle of the period (so the
history holds two versions of them). The grid spine (every contact known at each of ``--cutoffs``
cut-offs) is built with ``attributes.values: latest`` (the floor: one join of the contacts) and
``as_of`` (the as-of join of the history), each materialised with ``CREATE TABLE ... AS``; the table
shows the median wall time (best in brackets), the ratio to the floor and the load average, and the
figures go to ``benchmarks/results/attribute_history_bench.json``. Both builds' outputs are checked:
the changed attributes differ before the change (the as-of build reads the old values) and nowhere
after it, every other column is equal.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO / "benchmarks" / "results" / "attribute_history_bench.json"


def _world(args, work: Path):
    from propensity.features.store import Workspace, ingest_file
    from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world

    world = generate_world(WorldConfig(contacts=args.contacts, days=args.days, seed=1))
    paths = write_world(world, work / "data", fmt="parquet")
    ws = Workspace(work / "ws")
    for kind in ("contacts", "events"):
        ingest_file(ws, kind, paths[kind])
    contacts = pd.read_parquet(paths["contacts"])
    rng = np.random.default_rng(0)
    moved = rng.random(len(contacts)) < args.changed
    middle = datetime(2025, 1, 1) + timedelta(days=args.days // 2)
    second = contacts.assign(
        industry=np.where(moved, "software", contacts["industry"]),
        plan_interest=np.where(moved, "enterprise", contacts["plan_interest"]),
        updated_at=pd.Timestamp(middle))
    second.to_parquet(work / "data" / "contacts_v2.parquet", index=False)
    started = time.perf_counter()
    report = ingest_file(ws, "contacts", work / "data" / "contacts_v2.parquet")
    ingest_seconds = time.perf_counter() - started
    return ws, len(world.events), int(moved.sum()), report.updated, ingest_seconds, middle


def _build(ws, config, cutoffs, with_history: bool, name: str) -> float:
    from propensity.features.build import build_features, discover_event_types
    from propensity.features.history import history_table
    from propensity.features.spine import spine_grid

    con = ws.ibis_connection()
    events, contacts = con.table("events"), con.table("contacts")
    spine = spine_grid(events, cutoffs[0], cutoffs[-1], (cutoffs[1] - cutoffs[0]).days, contacts)
    spine = con.create_table("_bench_spine", spine.execute(), overwrite=True)
    types = discover_event_types(events, config)
    expr = build_features(events, spine, config, contacts=contacts, event_types=types,
                          contact_history=history_table(con) if with_history else None)
    sql = con.compile(expr)
    started = time.perf_counter()
    con.raw_sql(f"CREATE OR REPLACE TABLE {name} AS {sql}").fetchall()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--cutoffs", type=int, default=4)
    parser.add_argument("--changed", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/propensity-bench-history"))
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)

    from propensity.features.attributes import resolve_attributes
    from propensity.features.config import AttributeSelection, FeatureConfig

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    ws, n_events, n_moved, updated, ingest_seconds, middle = _world(args, args.workdir)
    # cut-offs on both sides of the change: from a quarter of the period to its end
    first, step = args.days // 4, max(1, (args.days - args.days // 4) // max(args.cutoffs - 1, 1))
    cutoffs = [datetime(2025, 1, 1) + timedelta(days=first + step * i) for i in range(args.cutoffs)]
    base = FeatureConfig(windows_days=(7, 30, 90), half_lives_days=(7.0, 30.0), monetary_types=())
    base, _ = resolve_attributes(base, ws.ibis_connection().table("contacts"))
    modes = {"latest": (False, "latest"), "as_of": (True, "as_of")}
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.repeats):
        for mode, (with_history, values) in modes.items():
            config = base.model_copy(update={"attributes": AttributeSelection(
                columns=base.attributes.columns, values=values)})
            times[mode].append(_build(ws, config, cutoffs, with_history, f"features_{mode}"))

    con = ws.ibis_connection()
    latest = con.table("features_latest").execute().sort_values(["contact_id", "as_of"]).reset_index(drop=True)
    as_of = con.table("features_as_of").execute().sort_values(["contact_id", "as_of"]).reset_index(drop=True)
    before = as_of["as_of"] <= pd.Timestamp(middle)
    differs = (latest["industry"] != as_of["industry"]) | (latest["plan_interest"] != as_of["plan_interest"])
    others = [c for c in latest.columns if c not in ("industry", "plan_interest")]
    # float sums may differ in the last bit between two runs (parallel aggregation order)
    equal = all(np.allclose(latest[c], as_of[c], rtol=1e-12, atol=0, equal_nan=True)
                if pd.api.types.is_float_dtype(latest[c]) else latest[c].equals(as_of[c]) for c in others)
    # before the change the as-of build reads the old values, the latest build the new: they differ
    # exactly there; after it both read the new ones
    checks = {"rows": len(as_of), "rows_latest": len(latest),
              "differ_before_change": int(differs[before].sum()), "differ_after_change": int(differs[~before].sum()),
              "other_columns_equal": bool(equal)}
    load = os.getloadavg()
    floor = statistics.median(times["latest"])
    print(f"{n_events:,} events, {args.contacts:,} contacts, {n_moved:,} changed on {middle:%Y-%m-%d} "
          f"(second contacts ingest: {updated:,} updated, {ingest_seconds:.2f} s, history kept)")
    print(f"spine: {len(as_of):,} rows over {args.cutoffs} cut-offs {cutoffs[0]:%Y-%m-%d} .. {cutoffs[-1]:%Y-%m-%d}")
    print(f"{'attributes':<10} {'median s':>9} {'(best)':>8} {'x floor':>8}")
    for mode in modes:
        med = statistics.median(times[mode])
        print(f"{mode:<10} {med:>9.2f} {min(times[mode]):>8.2f} {med / floor:>8.2f}")
    print(f"checks: {checks}")
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "when": datetime.now().isoformat(timespec="seconds"), "contacts": args.contacts, "days": args.days,
        "events": n_events, "changed": n_moved, "cutoffs": [str(c) for c in cutoffs], "repeats": args.repeats,
        "seconds": times, "ratio_to_floor": statistics.median(times["as_of"]) / floor,
        "second_ingest_seconds": ingest_seconds, "checks": checks, "load_average": list(load)}, indent=2))
    ok = checks["differ_before_change"] > 0 and checks["differ_after_change"] == 0 and checks["other_columns_equal"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
