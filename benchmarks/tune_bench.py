"""Does `propensity tune` make the hand rules better on held-out data?

Two checks from issue 4, both judged on the test split (data the proposal was not fitted on:
the proposal is distilled from the learned model's SHAP values on train/valid rows):

* the generated worlds (``--worlds saas,signals,repeat``: the SaaS world with the mis-weighted
  default rules ``configs/rules/saas.yaml``, the short-lived-signals world with
  ``benchmarks/worlds/signals_rules.yaml``, the repeat-purchase world with
  ``benchmarks/worlds/repeat_rules.yaml`` and ``repeat_train.yaml``): the proposed rules close at
  least 70% of the ROC-AUC gap between the current rules and the learned model (issue 13; issue 4
  asked for half on the SaaS world);
* OULAD (``configs/train_oulad.yaml``, rules ``configs/rules/oulad.yaml``): the proposed rules
  beat the current ones on the 2014 presentations.

Each section builds a workspace in ``--workdir`` (generate/ingest, ``train`` with MLflow
tracking, then ``tune``, both through ``propensity.Project``), unless it already holds a champion (``--reuse``, the default),
prints a table and writes ``benchmarks/results/tune_bench.json``.

    python benchmarks/tune_bench.py                       # both (OULAD needs ../shared/data/oulad)
    python benchmarks/tune_bench.py --skip-oulad --contacts 20000
    python benchmarks/tune_bench.py --skip-oulad --worlds signals,repeat --json benchmarks/results/tune_bench_worlds.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before lightgbm loads (see pipelines/cli.py)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "tune_bench.json"
OULAD = ROOT.parent / "shared" / "data" / "oulad"


def _machine() -> dict:
    import importlib.metadata as md

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {p: md.version(p) for p in ("lightgbm", "shap", "duckdb", "ibis-framework", "pandas")},
    }


def _own_store() -> None:
    """Let the next workspace use its own MLflow store.

    ``mlflow.set_tracking_uri`` also sets ``$MLFLOW_TRACKING_URI``, which ``configure_tracking``
    honours as the user's choice, so a second workspace in one process would otherwise reuse
    the first one's store.
    """
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def _has_champion(ws, model_name: str) -> bool:
    from propensity import Project

    if not ws.db_path.exists():
        return False
    _own_store()
    return Project(ws).find_model("champion", model_name) is not None


def _train(ws, config_path: Path, log) -> dict:
    from propensity import Project

    started = time.perf_counter()
    _own_store()
    result = Project(ws).train(config_path, step=lambda s: log(f"  train: {s}"))
    test = result.metrics[result.metrics["split"] == "test"].set_index("model")["roc_auc"].to_dict()
    return {"seconds": round(time.perf_counter() - started, 1), "test_roc_auc": test,
            "promoted": bool(result.registry.promoted) if result.registry else None}


def _tune(ws, config_path: Path, fit_rows: int, log) -> tuple[dict, object]:
    from propensity import Project

    _own_store()
    started = time.perf_counter()
    marks: dict[str, float] = {}

    def step(label: str) -> None:
        marks[label] = round(time.perf_counter() - started, 1)
        log(f"  tune: {label} (at {marks[label]:.0f} s)")

    # the rules the config names, tuned against its champion: what `propensity tune --config` does
    result, _ = Project(ws).tune("champion", config=config_path, fit_rows=fit_rows, step=step)
    summary = result.summary()
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["step_started_at_seconds"] = marks
    return summary, result


# issue 13: every generated world, each with its own hand rules and train config
WORLDS = {
    "saas": {"train": "configs/train.yaml", "rules": "configs/rules/saas.yaml", "days": 180},
    "signals": {"train": "configs/train.yaml", "rules": "benchmarks/worlds/signals_rules.yaml", "days": 180},
    "repeat": {"train": "benchmarks/worlds/repeat_train.yaml", "rules": "benchmarks/worlds/repeat_rules.yaml",
               "days": 547},
}
TARGET_GAP_CLOSED = 0.7  # issue 13: tuned rules close at least 70% of the rule -> learned gap on each world


def _generate(world: str, contacts: int, days: int, seed: int):
    if world == "signals":
        from propensity.pipelines.synthetic_signals import (
            SignalWorldConfig,
            generate_signal_world,
        )

        return generate_signal_world(SignalWorldConfig(contacts=contacts, days=days, seed=seed))
    if world == "repeat":
        from propensity.pipelines.synthetic_repeat import (
            RepeatWorldConfig,
            generate_repeat_world,
        )

        return generate_repeat_world(RepeatWorldConfig(contacts=contacts, days=days, seed=seed))
    from propensity.pipelines.synthetic import WorldConfig, generate_world

    return generate_world(WorldConfig(contacts=contacts, days=days, seed=seed))


def world_section(world: str, workdir: Path, contacts: int, n_trials: int, fit_rows: int, reuse: bool, log,
                  seed: int = 0) -> dict:
    from propensity import Project
    from propensity.features.store import Workspace
    from propensity.pipelines.synthetic import write_world

    spec = WORLDS[world]
    folder = workdir / (f"synthetic_{contacts}" if world == "saas" and seed == 0 else f"{world}_{contacts}_s{seed}")
    ws = Workspace(folder / "ws")
    source = ROOT / spec["train"]
    config = yaml.safe_load(source.read_text())
    # the config's relative paths resolve against its own folder; the copy lives elsewhere
    features = (source.parent / config["features"]).resolve()
    config.update(rules=str(ROOT / spec["rules"]), features=str(features))
    config["model"] = {**config["model"], "n_trials": n_trials}
    config.setdefault("mlflow", {"experiment": "propensity", "model_name": "propensity"})
    config_path = folder / "train.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(config))
    out = {"world": world, "contacts": contacts, "days": spec["days"], "seed": seed, "n_trials": n_trials,
           "rules": spec["rules"], "train_config": spec["train"]}
    if not (reuse and _has_champion(ws, config["mlflow"]["model_name"])):
        log(f"{world}: generate {contacts:,} contacts x {spec['days']} days, ingest, train")
        paths = write_world(_generate(world, contacts, spec["days"], seed), folder / "data", fmt="parquet")
        for kind in ("contacts", "events", "outcomes"):
            Project(ws).ingest(kind, paths[kind])
        out["train"] = _train(ws, config_path, log)
    summary, _ = _tune(ws, config_path, fit_rows, log)
    out["tune"] = summary
    auc = {m: v["roc_auc"] for m, v in summary["test"].items()}
    out["gap_closed"] = summary["gap_closed"]
    out["target"] = f"proposed rules close >= {TARGET_GAP_CLOSED:.0%} of the test ROC-AUC gap (current rules -> learned model)"
    closed = summary["gap_closed"]
    out["met"] = bool(closed >= TARGET_GAP_CLOSED)  # NaN (no gap) compares False
    out["test_roc_auc"] = auc
    return out


def oulad_section(workdir: Path, fit_rows: int, reuse: bool, log) -> dict:
    from propensity.features.dataset import dataset_spine, ingest_dataset, load_dataset_config
    from propensity.features.store import Workspace
    from propensity.pipelines.jobs import store_spine

    if not OULAD.exists():
        return {"skipped": f"{OULAD} not found"}
    ws = Workspace(workdir / "oulad" / "ws")
    config_path = ROOT / "configs" / "train_oulad.yaml"
    out: dict = {}
    if not (reuse and _has_champion(ws, "propensity-oulad")):
        log("oulad: ingest the dataset and train (several minutes)")
        dataset = load_dataset_config(ROOT / "configs" / "datasets" / "oulad.yaml")
        ingest_dataset(ws, dataset, root=OULAD)
        for name in sorted(dataset.spines or {}):
            store_spine(ws, name, dataset_spine(ws, dataset, name, root=OULAD))
        out["train"] = _train(ws, config_path, log)
    summary, _ = _tune(ws, config_path, fit_rows, log)
    out["tune"] = summary
    auc = {m: v["roc_auc"] for m, v in summary["test"].items()}
    out["test_roc_auc"] = auc
    out["target"] = "proposed rules beat the current rules' ROC-AUC on the 2014 presentations (test)"
    out["met"] = bool(auc["proposed rules"] > auc["current rules"])
    out["gap_closed"] = summary["gap_closed"]
    return out


def _table(results: dict) -> str:
    lines = [f"{'data':<22}{'current':>9}{'proposed':>10}{'learned':>9}{'gap closed':>12}"
             f"{'lift@10% cur/prop':>20}  {'target met':<10}"]
    for name, section in results["sections"].items():
        if "skipped" in section:
            lines.append(f"{name:<22}skipped: {section['skipped']}")
            continue
        test = section["tune"]["test"]
        lift = f"{test['current rules']['lift_top10']:.2f}/{test['proposed rules']['lift_top10']:.2f}"
        lines.append(f"{name:<22}{test['current rules']['roc_auc']:>9.4f}{test['proposed rules']['roc_auc']:>10.4f}"
                     f"{test['learned model']['roc_auc']:>9.4f}{section['gap_closed']:>12.0%}{lift:>20}  "
                     f"{'yes' if section['met'] else 'NO':<10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/propensity-tune-bench"))
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--n-trials", type=int, default=5, help="Optuna trials of the synthetic model.")
    parser.add_argument("--fit-rows", type=int, default=40_000)
    parser.add_argument("--no-reuse", action="store_true", help="Rebuild workspaces even if they hold a champion.")
    parser.add_argument("--skip-oulad", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--worlds", default="saas", help="generated worlds, comma-separated: saas,signals,repeat")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated worlds")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    results = {"machine": _machine(), "loadavg_start": [round(x, 2) for x in os.getloadavg()], "sections": {}}
    started = time.perf_counter()
    if not args.skip_synthetic:
        for world in args.worlds.split(","):
            label = "synthetic (saas rules)" if world == "saas" else f"{world} ({world} rules)"
            results["sections"][label] = world_section(world.strip(), args.workdir, args.contacts, args.n_trials,
                                                       args.fit_rows, not args.no_reuse, log, seed=args.seed)
    if not args.skip_oulad:
        results["sections"]["OULAD (oulad rules)"] = oulad_section(args.workdir, args.fit_rows, not args.no_reuse, log)
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(_table(results))
    print(f"(test split ROC-AUC; {results['machine']['nproc']} cpus, load {results['loadavg_start'][0]} -> "
          f"{results['loadavg_end'][0]}, {results['seconds']:.0f} s)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=str))
    print(f"-> {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
