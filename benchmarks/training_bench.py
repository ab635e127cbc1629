"""Speed benchmark of training and of batch scoring with the registered model.

Not a test. Run from the repository root::

    python benchmarks/training_bench.py                      # 100k + 1M, training and scoring
    python benchmarks/training_bench.py --only 100k,score    # sections: 100k, 1m, score
    python benchmarks/training_bench.py --bootstrap-1m       # 1M frame resampled from the 100k one

Sections (each writes its own entry of the JSON, so a later ``--only`` run keeps the others):

1. ``train_100k`` / ``train_1m``: a synthetic world (``propensity.pipelines.synthetic``, written to Parquet
   block by block) is ingested into a DuckDB workspace under ``--workdir`` and turned into a
   training frame exactly as ``propensity train`` does it (``assemble_training_set`` with
   ``configs/train.yaml``: a grid spine every 14 days, 30-day labels, time splits, purging,
   ``build_features`` through Ibis). The world's size is chosen so that the training frame has
   about 100k / 1M rows (``--contacts-100k`` / ``--contacts-1m``); the frame is cached as
   Parquet and reused. Then ``prepare_matrix`` (as ``train()`` calls it) and ``fit_lightgbm``
   are timed with ``tune=False`` and with ``--trials`` Optuna trials (time budget
   ``--fit-timeout``, large, so that the budget does not cut the search; whether it did is
   reported), each in a fresh process. ``train_100k`` also times the whole ``train()`` job
   (assembly, leakage guard, points model, LightGBM with ``--trials`` trials, calibration,
   metrics, MLflow logging and registration) on the same workspace.
   With ``--bootstrap-1m`` the 1M frame is NOT built from a world: the 100k frame is resampled
   with replacement within each split up to 1M rows (new contact ids); the output says so.
2. ``score``: the scorer of the largest tuned fit (booster + calibrator + score map, calibrated
   on ``valid`` as ``train()`` does) is logged with ``log_scorer_model`` into a fresh sqlite
   MLflow store (``configure_tracking`` on a folder under ``--workdir``), given the alias
   ``champion`` and loaded with ``mlflow.pyfunc.load_model("models:/NAME@champion")``. Input:
   ``--score-rows`` rows of the largest training frame's feature columns, in the dtypes the
   feature build produces, selected as ``run_model_scores`` does (``features[feature_names]``).
   Measured, round robin so that machine load hits all alike, ``--repeats`` times after one
   untimed warm-up call:

   * ``pyfunc.predict(features)``: the registered model, end to end;
   * ``scorer.score(features)``: the same scorer without MLflow;
   * ``booster.predict(matrix)``: LightGBM's own predict on the matrix ``prepare_matrix`` made
     (prepared once, outside the timing): the reference of the ratio target;
   * ``booster.predict(ndarray)``: the same values as one float64 array (C and Fortran order):
     the floor, without LightGBM's DataFrame conversion;
   * ``pyfunc.predict`` with the fast path proposed in the report (an array builder replacing
     ``prepare_matrix`` in ``LearnedScorer.raw_probability``), applied *inside this process only*
     by replacing the method; the product code is not changed. Its output is compared with the
     unpatched pyfunc's.

   A breakdown of ``pyfunc.predict`` (MLflow's input validation / schema enforcement,
   ``prepare_matrix``, ``booster.predict`` and the DataFrame conversion inside it, calibrator,
   score map, the rest) comes from ``--repeats`` more calls with timers wrapped around those
   functions.

3. ``shipped`` (``--only shipped``): the models the shipped configs produce. ``--scorers
   tag=DIR`` takes a scorer saved by ``benchmarks/quality_bench.py`` (``configs/train.yaml`` on a
   synthetic world; the folder also holds that world's test-split features); ``--oulad-ws WS``
   first runs ``train()`` with ``configs/train_oulad.yaml`` on an ingested OULAD workspace and
   saves its scorer and test features the same way. Each model is registered, loaded as
   ``models:/…@champion`` and timed on ``--score-rows`` rows (the test features repeated):
   ``pyfunc.predict``, ``LearnedScorer.score``, ``booster.predict`` on ``prepare_matrix``'s
   frame (the ratio's reference) and on ``model_array``'s float64 array (what the scorer now
   passes), then ``booster.predict`` with the first 25, 50, 100, ... trees: rate vs trees.
   With the ``[fast]`` extra (unless ``--no-compiled``) the same registered model is loaded a
   second time with ``PROPENSITY_COMPILED_TREES=1`` (what ``score --compiled`` does): its trees
   are compiled to C by TL2cgen + gcc in ``load_context`` (timed, into a fresh cache) and
   ``pyfunc.predict`` is timed again; the largest probability difference to the plain pyfunc is
   recorded, and ``compiled_predictor`` is timed on the array with 25, 50 and 100 trees per
   compiled block. Writes the JSON section ``score_shipped``.

Diagnostics (``--no-diagnostics`` skips them): the 100k ``tune=False`` fit and the scoring step
are run once more with ``OMP_WAIT_POLICY=passive`` in the child's environment. LightGBM uses
libgomp, whose waiting threads spin by default; on a shared, loaded 2-core machine that was seen
to slow boosting rounds by up to ~100x. These rows are labelled as diagnostics and are not
product settings; the headline rows use the environment as it is.

Every step runs in a fresh Python subprocess; peak RSS is that child's ``ru_maxrss``. Wall time
is measured inside the child around the step only; CPU time (user + system, all threads) is
recorded too, because on a shared machine it moves less than wall time. Load averages and
``uptime`` are recorded before and after each step. Temporary data goes under ``--workdir``
(default /tmp/propensity-train-bench), never the repository.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO / "benchmarks" / "results" / "training_bench.json"
TRAIN_CONFIG = REPO / "configs" / "train.yaml"
MB = 1024 * 1024
KEYS = ["contact_id", "as_of"]
NOT_FEATURES = {"contact_id", "as_of", "split", "label", "label_end", "rule_score", "points"}

TARGET_SCORE_RATE = 200_000  # contacts/s, pyfunc.predict on 1M rows, 2 cores
TARGET_SCORE_RATIO = 1.3  # pyfunc.predict / booster.predict(prepared matrix)
MODEL_NAME = "propensity-bench"


# =============================================================================== child side


sys.path.insert(0, str(Path(__file__).resolve().parent))  # features_bench's child helpers
from features_bench import _log, _Span  # noqa: E402

from propensity.pipelines.training.model import model_array  # noqa: E402


def _train_config(p: dict[str, Any]):
    from propensity.pipelines.training.config import load_train_config

    config = load_train_config(TRAIN_CONFIG)
    model = config.model.model_copy(update={
        "tune": True, "n_trials": p.get("trials", config.model.n_trials),
        "timeout_seconds": p.get("timeout", config.model.timeout_seconds),
    })
    return config.model_copy(update={"model": model})


def _write_world(contacts: int, days: int, seed: int, out: Path) -> dict[str, int]:
    """Events, contacts and outcomes of a synthetic world, written block by block (bounded memory).

    Uses the generator's per-block helpers, as ``features_bench.py`` does: concatenated, the
    files hold exactly ``generate_world``'s tables.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from propensity.pipelines import synthetic as syn

    config = syn.WorldConfig(contacts=contacts, days=days, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    writers: dict[str, pq.ParquetWriter] = {}
    rows = {"events": 0, "contacts": 0, "outcomes": 0}
    pending: dict[str, list[pa.Table]] = {name: [] for name in rows}
    accounts = syn._draw_accounts(config)
    n_blocks = syn._n_blocks(config)
    for b in range(n_blocks):
        block = syn._simulate_block(config, accounts, b)
        pending["events"].append(syn._events_table(config, block))
        pending["contacts"].append(syn._contacts_table(config, accounts, block))
        pending["outcomes"].append(syn._outcomes_table(config, block))
        if b % 8 == 7 or b == n_blocks - 1:
            for name, parts in pending.items():
                table = pa.concat_tables(parts)
                if name not in writers:
                    writers[name] = pq.ParquetWriter(out / f"{name}.parquet", table.schema)
                writers[name].write_table(table)
                rows[name] += table.num_rows
                parts.clear()
    for writer in writers.values():
        writer.close()
    return rows


def step_data(p: dict[str, Any]) -> dict[str, Any]:
    """World -> Parquet -> workspace -> training frame (``assemble_training_set``), cached."""
    from propensity.features.config import load_feature_config
    from propensity.features.store import Workspace, ingest_file
    from propensity.pipelines.rules.config import load_rules
    from propensity.pipelines.training.dataset import assemble_training_set

    out = Path(p["out"])
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with _Span() as gen:
        rows = _write_world(p["contacts"], p["days"], p["seed"], out / "data")
    _log(f"  world written: {rows['events']:,} events, {gen.seconds:.1f} s")
    ws = Workspace(out / "ws")
    with _Span() as ing:
        for kind in ("contacts", "events", "outcomes"):
            ingest_file(ws, kind, out / "data" / f"{kind}.parquet")
    _log(f"  ingested: {ing.seconds:.1f} s")
    config = _train_config({})
    con = ws.ibis_connection()
    with _Span() as asm:
        ts = assemble_training_set(
            con, config, load_rules(config.rules), load_feature_config(config.features),
            events=con.table("events"), contacts=con.table("contacts"), outcomes=ws.table("outcomes"),
        )
    _log(f"  training set: {len(ts.frame):,} rows x {len(ts.feature_columns)} features, {asm.seconds:.1f} s")
    ts.frame.to_parquet(out / "frame.parquet")
    meta = {
        "contacts": p["contacts"], "days": p["days"], "seed": p["seed"], "world_rows": rows,
        "rows": len(ts.frame), "feature_columns": ts.feature_columns, "event_types": list(ts.event_types),
        "summary": ts.summary, "purged": ts.purged, "bootstrapped": False, "ws": str(ws.path),
        "world_seconds": gen.seconds, "ingest_seconds": ing.seconds, "assemble_seconds": asm.seconds,
        "assemble_cpu_seconds": asm.cpu_seconds,
    }
    (out / "meta.json").write_text(json.dumps(meta, default=str))
    del ts
    return {**meta, "seconds": gen.seconds + ing.seconds + asm.seconds,
            "cpu_seconds": gen.cpu_seconds + ing.cpu_seconds + asm.cpu_seconds}


def step_bootstrap(p: dict[str, Any]) -> dict[str, Any]:
    """A bigger frame resampled (with replacement, within each split) from a smaller real one."""
    import numpy as np
    import pandas as pd

    src = Path(p["src"])
    meta = json.loads((src / "meta.json").read_text())
    frame = pd.read_parquet(src / "frame.parquet")
    rng = np.random.default_rng(p["seed"])
    factor = p["rows"] / len(frame)
    with _Span() as span:
        parts = []
        for split, part in frame.groupby("split", observed=True, sort=False):
            take = rng.integers(0, len(part), size=round(len(part) * factor))
            sample = part.iloc[take].reset_index(drop=True)
            sample["contact_id"] = sample["contact_id"].astype(str) + "~" + pd.Series(np.arange(len(sample)), dtype="int64").astype(str)
            parts.append(sample)
        big = pd.concat(parts, ignore_index=True).sort_values(KEYS, kind="stable").reset_index(drop=True)
    out = Path(p["out"])
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    big.to_parquet(out / "frame.parquet")
    summary = (big.groupby("split", observed=True)
               .agg(rows=("label", "size"), positives=("label", "sum"), cutoffs=("as_of", "nunique"))
               .to_dict(orient="index"))
    new = {**meta, "rows": len(big), "summary": summary, "bootstrapped": True, "bootstrapped_from": str(src),
           "bootstrapped_from_rows": len(frame), "ws": None}
    (out / "meta.json").write_text(json.dumps(new, default=str))
    return {**new, "seconds": span.seconds, "cpu_seconds": span.cpu_seconds}


def _matrices(frame, columns):
    """The matrices exactly as ``train()`` makes them (categories learned on train)."""
    from propensity.pipelines.training.model import prepare_matrix

    is_train = (frame["split"] == "train").to_numpy()
    is_valid = (frame["split"] == "valid").to_numpy()
    _, categories = prepare_matrix(frame[is_train], columns)
    X_all, _ = prepare_matrix(frame, columns, categories)
    return X_all, categories, is_train, is_valid


def step_fit(p: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd

    from propensity.pipelines.training.model import ModelConfig, fit_lightgbm

    folder = Path(p["data"])
    meta = json.loads((folder / "meta.json").read_text())
    frame = pd.read_parquet(folder / "frame.parquet")
    columns = meta["feature_columns"]
    with _Span() as prep:
        X_all, _, is_train, is_valid = _matrices(frame, columns)
        X_train, X_valid = X_all[is_train], X_all[is_valid]
    y_train, y_valid = frame.loc[is_train, "label"], frame.loc[is_valid, "label"]
    config = ModelConfig(tune=p["tune"], n_trials=p["trials"], timeout_seconds=p["timeout"], seed=0)
    gc.collect()
    with _Span() as span:
        fitted = fit_lightgbm(X_train, y_train, X_valid, y_valid, config)
    result = {
        "rows": len(frame), "train_rows": int(is_train.sum()), "valid_rows": int(is_valid.sum()),
        "features": len(columns), "categorical": sorted(fitted.categories),
        "tune": p["tune"], "trials_requested": p["trials"] if p["tune"] else 1,
        "trials_done": len(fitted.trials) if p["tune"] else 1,
        "best_iteration": fitted.best_iteration, "valid_auc": fitted.valid_auc,
        "num_trees": fitted.booster.num_trees(), "params": fitted.params,
        "hit_time_budget": fitted.hit_time_budget, "fit_seconds_reported": fitted.fit_seconds,
        "prepare_seconds": prep.seconds, "prepare_cpu_seconds": prep.cpu_seconds,
        "seconds": span.seconds, "cpu_seconds": span.cpu_seconds,
    }
    if p["tune"]:
        trials = fitted.trials
        result["trial_seconds"] = [round(d.total_seconds(), 2) for d in trials["duration"]]
        result["trial_best_iteration"] = [int(x) for x in trials.get("user_attrs_best_iteration", [])]
        result["trial_valid_metric"] = [round(float(x), 5) for x in trials["value"]]
    if p.get("save_scorer"):
        from propensity.features.config import load_feature_config
        from propensity.pipelines.training.calibration import ProbabilityCalibrator, ScoreMapper
        from propensity.pipelines.training.scorer import LearnedScorer

        train_config = _train_config({})
        raw = fitted.predict_raw(X_all)
        calibrator = ProbabilityCalibrator(method=train_config.calibration.method).fit(raw[is_valid], y_valid)
        probability = calibrator.transform(raw)
        mapper = ScoreMapper(method=train_config.calibration.score_mapping).fit(
            probability[is_valid], y_valid, frame.loc[is_valid, "rule_score"])
        scorer = LearnedScorer(
            booster=fitted.booster, feature_names=fitted.feature_names, categories=fitted.categories,
            calibrator=calibrator, mapper=mapper, best_iteration=fitted.best_iteration,
            feature_config=load_feature_config(train_config.features).model_dump(mode="json"),
            event_types=tuple(meta["event_types"]),
            metadata={"params": fitted.params, "benchmark": "training_bench", "data": str(folder)},
        )
        scorer.save(p["save_scorer"])
        result["scorer_saved"] = p["save_scorer"]
        result["calibration_method"] = calibrator.method_
    return result


def step_train(p: dict[str, Any]) -> dict[str, Any]:
    """The whole ``train`` operation (``Project.train``) on the data step's workspace, MLflow store inside it."""
    from propensity import Project
    from propensity.features.store import Workspace

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    ws = Workspace(p["ws"])
    for leftover in ("mlflow.db", "mlartifacts", "models"):
        target = ws.path / leftover
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    config = _train_config(p)
    stages: list[list[Any]] = []

    def step(label: str) -> None:
        stages.append([label, time.perf_counter()])

    with _Span() as span:
        result = Project(ws).train(config, step=step)
    end = span.t0 + span.seconds
    timed = [[label, round((stages[i + 1][1] if i + 1 < len(stages) else end) - t, 3)]
             for i, (label, t) in enumerate(stages)]
    metrics = result.metrics.set_index(["model", "split"])
    registry = result.registry
    return {
        "rows": sum(v["rows"] for v in result.summary["splits"].values()),
        "stages": timed, "model_version": result.model_version,
        "promoted": getattr(registry, "promoted", None),
        "learned_test_auc": float(metrics.loc[("learned", "test"), "roc_auc"]) if result.scorer else None,
        "rules_test_auc": float(metrics.loc[("rules", "test"), "roc_auc"]),
        "trials": config.model.n_trials, "timeout_seconds": config.model.timeout_seconds,
        "seconds": span.seconds, "cpu_seconds": span.cpu_seconds,
    }


# ------------------------------------------------------------------------ scoring


def _proposed_raw_probability(self, features):
    """The pre-check-free ``raw_probability`` once proposed here; product code adopted it
    (``propensity.pipelines.training.model.model_array``), so this row now reads as a control."""
    missing = [c for c in self.feature_names if c not in features.columns]
    if missing:
        raise ValueError(f"the feature frame lacks {len(missing)} column(s) the model was trained on")
    matrix = model_array(features, self.feature_names, self.categories)
    return self.booster.predict(matrix, num_iteration=self.best_iteration)


class _Timers:
    """Wall-clock timers wrapped around functions and methods, undone by :meth:`restore`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._undo: list[tuple[object, str, object, bool]] = []

    def wrap(self, owner: object, attr: str, name: str) -> None:
        original = getattr(owner, attr)
        had_own = attr in getattr(owner, "__dict__", {})  # modules, classes; not instance methods
        self.seconds.setdefault(name, 0.0)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original, had_own))

    def restore(self) -> None:
        for owner, attr, original, had_own in reversed(self._undo):
            if had_own:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)  # an instance attribute shadowing the class method
        self._undo.clear()


def step_score(p: dict[str, Any]) -> dict[str, Any]:
    import lightgbm
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.tracking import MlflowClient

    import propensity.pipelines.training.scorer as scorer_module
    from propensity.pipelines.training.model import prepare_matrix
    from propensity.pipelines.training.scorer import LearnedScorer, load_scorer
    from propensity.pipelines.training.tracking import CHAMPION, configure_tracking, log_scorer_model

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    folder = Path(p["data"])
    meta = json.loads((folder / "meta.json").read_text())
    frame = pd.read_parquet(folder / "frame.parquet")
    scorer = load_scorer(p["scorer"])
    n = p["rows"]
    features = frame[scorer.feature_names]
    replicated = len(features) < n
    if replicated:
        reps = -(-n // len(features))
        features = pd.concat([features] * reps, ignore_index=True)
    features = features.head(n).reset_index(drop=True)
    example = frame[frame["split"] == "train"]
    del frame
    gc.collect()

    store = Path(p["store"])
    shutil.rmtree(store, ignore_errors=True)
    with _Span() as log_span:
        uri = configure_tracking(store, None, "training-bench")
        with mlflow.start_run():
            _, version = log_scorer_model(scorer, example, MODEL_NAME)
        MlflowClient().set_registered_model_alias(MODEL_NAME, CHAMPION, version)
    del example
    with _Span() as load_span:
        model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{CHAMPION}")
    loaded = model.unwrap_python_model().scorer
    booster, iteration = loaded.booster, loaded.best_iteration

    with _Span() as cold:
        reference = model.predict(features)
    with _Span() as prep_span:
        matrix, _ = prepare_matrix(features, loaded.feature_names, loaded.categories)
    array_f = model_array(features, loaded.feature_names, loaded.categories)
    array_c = np.ascontiguousarray(array_f)
    same_values = bool(np.array_equal(
        matrix.apply(lambda c: c.cat.codes.replace(-1, np.nan) if isinstance(c.dtype, pd.CategoricalDtype) else c)
        .to_numpy(dtype="float64"), array_f, equal_nan=True))
    gc.collect()

    original_raw = LearnedScorer.raw_probability

    def pyfunc_proposed():
        LearnedScorer.raw_probability = _proposed_raw_probability
        try:
            return model.predict(features)
        finally:
            LearnedScorer.raw_probability = original_raw

    variants = {
        "pyfunc": lambda: model.predict(features),
        "scorer.score": lambda: loaded.score(features),
        "booster(prepared DataFrame)": lambda: booster.predict(matrix, num_iteration=iteration),
        "booster(ndarray C)": lambda: booster.predict(array_c, num_iteration=iteration),
        "booster(ndarray F)": lambda: booster.predict(array_f, num_iteration=iteration),
        "pyfunc + proposed fast path": pyfunc_proposed,
    }
    # one untimed call of each (the first pyfunc call was the cold one above)
    checks: dict[str, Any] = {}
    for name, fn in variants.items():
        out = fn()
        if name == "pyfunc + proposed fast path":
            checks["proposed_equals_pyfunc"] = bool(reference.equals(out))
            checks["proposed_max_abs_diff_probability"] = float(np.max(np.abs(
                out["probability"].to_numpy() - reference["probability"].to_numpy())))
        if name.startswith("booster"):
            checks.setdefault("booster_outputs_equal", True)
            checks["booster_outputs_equal"] &= bool(np.array_equal(out, variants["booster(prepared DataFrame)"]()))
        del out
    gc.collect()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for r in range(p["repeats"]):
        for name, fn in variants.items():
            gc.collect()
            with _Span() as span:
                out = fn()
            del out
            runs[name].append({"seconds": span.seconds, "cpu_seconds": span.cpu_seconds})
        _log(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]['seconds']:.2f} s" for k, v in runs.items()))

    # breakdown of pyfunc.predict with timers around its parts
    parts: list[dict[str, float]] = []
    for _ in range(p["repeats"]):
        timers = _Timers()
        timers.wrap(mlflow.pyfunc, "_validate_prediction_input", "mlflow input validation + schema enforcement")
        timers.wrap(scorer_module, "prepare_matrix", "prepare_matrix")
        timers.wrap(booster, "predict", "booster.predict (total)")
        timers.wrap(lightgbm.basic, "_data_from_pandas", "  of which LightGBM DataFrame -> ndarray")
        timers.wrap(loaded.calibrator, "transform", "calibrator.transform")
        timers.wrap(loaded.mapper, "transform", "mapper.transform")
        gc.collect()
        try:
            with _Span() as span:
                out = model.predict(features)
        finally:
            timers.restore()
        del out
        measured = {k: v for k, v in timers.seconds.items() if not k.startswith("  ")}
        row = {"total": span.seconds, **timers.seconds,
               "rest (np.clip, output DataFrame, reset_index, MLflow wrappers)": span.seconds - sum(measured.values())}
        parts.append(row)
    breakdown = {k: statistics.median(r[k] for r in parts) for k in parts[0]}

    return {
        "rows": n, "replicated": replicated, "source_rows": meta["rows"], "bootstrapped_source": meta["bootstrapped"],
        "features": len(loaded.feature_names), "categorical": sorted(loaded.categories),
        "num_trees": booster.num_trees(), "best_iteration": iteration,
        "num_leaves": loaded.metadata.get("params", {}).get("num_leaves"),
        "max_depth": loaded.metadata.get("params", {}).get("max_depth"),
        "input_dtypes": {str(k): int(v) for k, v in features.dtypes.astype(str).value_counts().items()},
        "tracking_uri": uri, "model_uri": f"models:/{MODEL_NAME}@{CHAMPION}", "model_version": version,
        "log_seconds": log_span.seconds, "load_seconds": load_span.seconds,
        "cold_first_call_seconds": cold.seconds, "prepare_matrix_once_seconds": prep_span.seconds,
        "prepared_equals_array": same_values, **checks,
        "runs": runs, "breakdown_median": breakdown, "breakdown_runs": parts,
        "omp_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "seconds": min(r["seconds"] for r in runs["pyfunc"]), "cpu_seconds": min(r["cpu_seconds"] for r in runs["pyfunc"]),
    }


def step_train_shipped(p: dict[str, Any]) -> dict[str, Any]:
    """``train()`` with a shipped config on an existing workspace (no MLflow); saves the scorer and
    the test split's features (built as scoring builds them) for :func:`step_score_trees`."""
    from propensity.features.build import build_features
    from propensity.features.config import FeatureConfig
    from propensity.features.store import Workspace
    from propensity.pipelines.training.config import load_train_config
    from propensity.pipelines.training.train import train

    ws = Workspace(p["ws"])
    config = load_train_config(p["config"])
    with _Span() as span:
        result = train(ws, config, track=False)
    if result.scorer is None:
        raise RuntimeError("train() fitted the points model only: no booster to score with")
    out = Path(p["out"])
    shutil.rmtree(out, ignore_errors=True)
    result.scorer.save(out)
    rows = result.test_scores[KEYS]
    con = ws.ibis_connection()
    spine = con.create_table("_bench_spine", rows, temp=True, overwrite=True)
    built = build_features(con.table("events"), spine, FeatureConfig.of_model(result.scorer.feature_config),
                           contacts=con.table("contacts"), event_types=result.scorer.event_types).execute()
    built.to_parquet(out / "features.parquet")
    metrics = result.metrics.set_index(["model", "split"])
    return {"config": p["config"], "scorer": str(out), "test_rows": len(rows), "num_trees": result.scorer.best_iteration,
            "learned_test_auc": float(metrics.loc[("learned", "test"), "roc_auc"]),
            "seconds": span.seconds, "cpu_seconds": span.cpu_seconds}


def step_score_trees(p: dict[str, Any]) -> dict[str, Any]:
    """Batch scoring with a saved scorer, end to end through the registered pyfunc, and LightGBM's
    own predict on the same rows at several numbers of trees (rate vs trees)."""
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from propensity.pipelines.training.model import prepare_matrix
    from propensity.pipelines.training.scorer import load_scorer
    from propensity.pipelines.training.tracking import CHAMPION, configure_tracking, log_scorer_model

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    folder = Path(p["scorer"])
    scorer = load_scorer(folder)
    source = pd.read_parquet(folder / "features.parquet")
    features = source[scorer.feature_names]
    reps = -(-p["rows"] // len(features))
    features = pd.concat([features] * reps, ignore_index=True).head(p["rows"]).reset_index(drop=True)
    store = Path(p["store"])
    shutil.rmtree(store, ignore_errors=True)
    name = f"{MODEL_NAME}-{p['tag']}"
    configure_tracking(store, None, "training-bench")
    with mlflow.start_run():
        _, version = log_scorer_model(scorer, source, name)
    MlflowClient().set_registered_model_alias(name, CHAMPION, version)
    model = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
    booster, trees = scorer.booster, scorer.best_iteration
    matrix, _ = prepare_matrix(features, scorer.feature_names, scorer.categories)
    array = model_array(features, scorer.feature_names, scorer.categories)
    compiled_model, compile_seconds = None, None
    if p.get("compiled"):
        # the product's opt-in (`score --compiled`): the same registered model, loaded with the
        # env var set, compiles its trees in load_context; a fresh cache so the compile is timed
        from propensity.pipelines.training.compiled import CACHE_ENV_VAR, ENV_VAR

        os.environ[CACHE_ENV_VAR] = str(store / "compiled-cache")
        os.environ[ENV_VAR] = "1"
        with _Span() as span:
            compiled_model = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
        compile_seconds = span.seconds
        os.environ.pop(ENV_VAR)
        assert compiled_model.unwrap_python_model().scorer.uses_compiled_trees
    variants = {
        "pyfunc": lambda: model.predict(features),
        **({"pyfunc(compiled trees)": lambda: compiled_model.predict(features)} if compiled_model else {}),
        "scorer.score": lambda: scorer.score(features),
        "booster(prepared DataFrame)": lambda: booster.predict(matrix, num_iteration=trees),
        "booster(ndarray)": lambda: booster.predict(array, num_iteration=trees),
    }
    same = bool(np.array_equal(variants["booster(ndarray)"](), variants["booster(prepared DataFrame)"]()))
    compiled_diff = None
    if compiled_model is not None:
        plain, fast = model.predict(features), compiled_model.predict(features)
        compiled_diff = float(np.abs(plain["probability"].to_numpy() - fast["probability"].to_numpy()).max())
    model.predict(features.head(1000))  # warm-up
    runs: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(p["repeats"]):  # round robin: load hits all variants alike
        for key, fn in variants.items():
            gc.collect()
            with _Span() as span:
                fn()
            runs[key].append(span.seconds)
            cpu[key].append(span.cpu_seconds)
    n = len(features)
    sweep = []
    for k in sorted({t for t in (25, 50, 100, 200, 400, 800) if t < trees} | {trees}):
        walls = []
        for _ in range(p["repeats"]):
            with _Span() as span:
                booster.predict(array, num_iteration=k)
            walls.append(span.seconds)
        sweep.append({"trees": k, "seconds_median": statistics.median(walls), "rate_median": n / statistics.median(walls)})
    block_sweep = []
    if compiled_model is not None:
        # what TREES_PER_BLOCK in pipelines/training/compiled.py rests on: the same array, blocks of k trees
        from propensity.pipelines.training.compiled import compiled_predictor

        for k in (25, 50, 100):
            predict = compiled_predictor(booster, trees, cache_dir=store / "compiled-cache", trees_per_block=k)
            walls, cpus = [], []
            for _ in range(p["repeats"]):
                with _Span() as span:
                    predict(array)
                walls.append(span.seconds)
                cpus.append(span.cpu_seconds)
            block_sweep.append({"trees_per_block": k, "rate_median": n / statistics.median(walls),
                                "cpu_seconds_median": statistics.median(cpus)})
    params = scorer.metadata.get("params", {})
    stats = {k: {"median": statistics.median(v), "best": min(v), "cpu_median": statistics.median(cpu[k]),
                 "rate_median": n / statistics.median(v)} for k, v in runs.items()}
    return {"tag": p["tag"], "rows": n, "source_rows": len(source), "features": len(scorer.feature_names),
            "categorical": sorted(scorer.categories), "num_trees": trees, "num_leaves": params.get("num_leaves"),
            "max_depth": params.get("max_depth"), "array_equals_prepared_predictions": same,
            "compile_seconds": compile_seconds, "compiled_max_abs_diff_probability": compiled_diff,
            "compiled_block_sweep": block_sweep,
            "stats": stats, "ratio_pyfunc_over_booster_prepared": stats["pyfunc"]["median"] / stats["booster(prepared DataFrame)"]["median"],
            "ratio_pyfunc_over_booster_ndarray": stats["pyfunc"]["median"] / stats["booster(ndarray)"]["median"],
            "trees_sweep": sweep, "seconds": stats["pyfunc"]["median"], "cpu_seconds": stats["pyfunc"]["cpu_median"]}


STEPS = {"data": step_data, "bootstrap": step_bootstrap, "fit": step_fit, "train": step_train, "score": step_score,
         "train_shipped": step_train_shipped, "score_trees": step_score_trees}


def child_main(step: str, params: str, out: str) -> int:
    result = STEPS[step](json.loads(params))
    Path(out).write_text(json.dumps(result, default=str))
    return 0


# =============================================================================== parent side


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run_child(step: str, params: dict[str, Any], workdir: Path, label: str,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one step in a fresh interpreter; add its peak RSS (MB), process times and the load.

    ``env`` adds variables to the child's environment (the OpenMP diagnostics use it).
    """
    out = workdir / "logs" / f"result-{step}-{os.getpid()}-{time.monotonic_ns()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "_child", step, json.dumps(params), str(out)]
    _log(f"{label} ...")
    load_before, uptime_before = os.getloadavg(), _uptime()
    t0 = time.perf_counter()
    child_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(cmd, cwd=REPO, env=child_env)
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or not out.exists():
        raise RuntimeError(f"{label}: step {step} failed with exit code {code}: {params}")
    result = json.loads(out.read_text())
    out.unlink()
    result.update(
        peak_rss_mb=round(usage.ru_maxrss / 1024),  # Linux: KiB
        process_seconds=round(time.perf_counter() - t0, 2),
        process_cpu_seconds=round(usage.ru_utime + usage.ru_stime, 2),
        load_before=[round(x, 2) for x in load_before],
        load_after=[round(x, 2) for x in os.getloadavg()],
        uptime_before=uptime_before,
        uptime_after=_uptime(),
        omp_wait_policy=child_env.get("OMP_WAIT_POLICY"),
    )
    _log(f"{label}: {result['seconds']:.2f} s (cpu {result['cpu_seconds']:.1f} s), "
         f"peak RSS {result['peak_rss_mb']:,} MB, load {result['load_before'][0]} -> {result['load_after'][0]}")
    return result


def repeat(step: str, params: dict[str, Any], n: int, workdir: Path, label: str,
           env: dict[str, str] | None = None) -> dict[str, Any]:
    runs = [run_child(step, params, workdir, f"{label} ({i + 1}/{n})", env) for i in range(n)]
    walls = [r["seconds"] for r in runs]
    cpus = [r["cpu_seconds"] for r in runs]
    summary = {k: v for k, v in runs[-1].items() if k not in ("seconds", "cpu_seconds")}
    summary.update(
        seconds_median=statistics.median(walls), seconds_best=min(walls), seconds_all=[round(w, 2) for w in walls],
        cpu_seconds_median=statistics.median(cpus), peak_rss_mb=max(r["peak_rss_mb"] for r in runs),
        load_all=[r["load_before"][0] for r in runs], repeats=n,
    )
    return summary


def row(name: str, rows: int | None, m: dict[str, Any] | None, *, rate: str = "-", result: str = "-",
        target: str = "-", met: bool | None = None, note: str = "", wall: str | None = None,
        cpu: str | None = None) -> dict[str, Any]:
    if wall is None and m is not None:
        wall = f"{m['seconds_median']:.2f} ({m['seconds_best']:.2f})" if "seconds_median" in m else f"{m['seconds']:.2f}"
    if cpu is None and m is not None:
        cpu = f"{m.get('cpu_seconds_median', m.get('cpu_seconds', 0)):.1f}"
    return {"name": name, "rows": rows, "wall": wall or "-", "cpu": cpu or "-", "rate": rate, "result": result,
            "target": target, "met": None if met is None else ("yes" if met else "NO"), "note": note}


def machine_facts() -> dict[str, Any]:
    import importlib.metadata as md

    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MB / 1024
    except (ValueError, OSError):
        pass
    versions = {}
    for pkg in ("numpy", "pandas", "pyarrow", "lightgbm", "optuna", "scikit-learn", "mlflow-skinny", "mlflow",
                "duckdb", "ibis-framework", "sqlglot", "sqlalchemy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "ram_gb": round(mem, 1) if mem else None,
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "uptime": _uptime(),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


# ----------------------------------------------------------------------------- sections


def _data(args: argparse.Namespace, tag: str) -> tuple[Path, dict[str, Any], dict[str, Any] | None]:
    """The cached training frame of a size (built when missing); returns (folder, meta, build)."""
    contacts = args.contacts_100k if tag == "100k" else args.contacts_1m
    boot = tag == "1m" and args.bootstrap_1m
    folder = args.workdir / (f"data_1m_bootstrap_{args.bootstrap_rows}" if boot else f"data_{contacts}x{args.days}_s{args.seed}")
    meta_path = folder / "meta.json"
    if meta_path.exists() and not args.regenerate:
        meta = json.loads(meta_path.read_text())
        _log(f"[{tag}] reusing {folder} ({meta['rows']:,} rows)")
        return folder, meta, None
    if boot:
        src, _, _ = _data(args, "100k")
        build = run_child("bootstrap", {"src": str(src), "out": str(folder), "rows": args.bootstrap_rows,
                                        "seed": args.seed}, args.workdir, f"[{tag}] bootstrap frame")
    else:
        build = run_child("data", {"contacts": contacts, "days": args.days, "seed": args.seed, "out": str(folder)},
                          args.workdir, f"[{tag}] world -> ingest -> training set")
    return folder, json.loads(meta_path.read_text()), build


def section_train(args: argparse.Namespace, tag: str) -> dict[str, Any]:
    folder, meta, build = _data(args, tag)
    label = f"[{tag}]"
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {"data": folder.name, "meta": {k: v for k, v in meta.items() if k != "feature_columns"}}
    n = meta["rows"]
    splits = ", ".join(f"{k} {v['rows']:,} ({v['positives']:,} pos)" for k, v in meta["summary"].items())
    if meta.get("bootstrapped"):
        what = (f"BOOTSTRAPPED: {meta['bootstrapped_from_rows']:,} real rows resampled with replacement "
                f"within each split to {n:,} (not a real 1M build)")
    else:
        world = meta["world_rows"]
        what = (f"{meta['contacts']:,} contacts, {world['events']:,} events; world {meta['world_seconds']:.0f} s, "
                f"ingest {meta['ingest_seconds']:.0f} s, assemble_training_set {meta['assemble_seconds']:.0f} s")
    if build is not None:
        out["build"] = build
        rows.append(row(f"{label} build training frame", n, build, note=f"{what}; {splits}"))
    else:
        rows.append(row(f"{label} training frame (cached)", n, None, note=f"{what}; {splits}"))

    repeats = args.fit_repeats if tag == "100k" else args.fit_repeats_1m
    for tune in (False, True):
        if ("tuned" if tune else "fixed") not in args.fits:
            continue
        p = {"data": str(folder), "tune": tune, "trials": args.trials if tune else 1, "timeout": args.fit_timeout,
             "save_scorer": str(args.workdir / f"scorer_{tag}{'' if tune else '_fixed'}")}
        name = f"fit_{'tuned' if tune else 'fixed'}"
        m = repeat("fit", p, repeats, args.workdir, f"{label} fit_lightgbm {'%d trials' % args.trials if tune else 'tune=False'}")
        out[name] = m
        note = (f"train {m['train_rows']:,} / valid {m['valid_rows']:,} rows x {m['features']} features "
                f"({len(m['categorical'])} categorical); prepare_matrix {m['prepare_seconds']:.1f} s; "
                f"peak RSS {m['peak_rss_mb']:,} MB")
        if tune:
            note += (f"; trials done {m['trials_done']}/{m['trials_requested']}, per-trial s {m['trial_seconds']}, "
                     f"per-trial best_iteration {m['trial_best_iteration']}")
        if m["hit_time_budget"]:
            note += f"; STOPPED BY THE TIME BUDGET ({args.fit_timeout:g} s)"
        rows.append(row(
            f"{label} fit_lightgbm " + (f"tune, {args.trials} trials" if tune else "tune=False"), m["train_rows"], m,
            result=f"best_iter {m['best_iteration']}, valid AUC {m['valid_auc']:.4f}", note=note))

    if args.diagnostics and tag == "100k" and "fixed" in args.fits:
        # Diagnostic, not a product setting: the same fixed fit with libgomp's threads sleeping
        # instead of spinning while they wait (LightGBM is built with libgomp). On a loaded
        # 2-core machine spinning threads of two processes can slow boosting rounds ~100x.
        p = {"data": str(folder), "tune": False, "trials": 1, "timeout": args.fit_timeout}
        m = repeat("fit", p, repeats, args.workdir, f"{label} fit_lightgbm tune=False, OMP_WAIT_POLICY=passive",
                   env={"OMP_WAIT_POLICY": "passive"})
        out["fit_fixed_omp_passive"] = m
        rows.append(row(f"{label} fit_lightgbm tune=False [diagnostic: OMP_WAIT_POLICY=passive]", m["train_rows"], m,
                        result=f"best_iter {m['best_iteration']}, valid AUC {m['valid_auc']:.4f}",
                        note="same data and parameters as the tune=False row; only the OpenMP wait policy "
                             "of the child differs"))

    if tag == "100k" and not args.no_train_e2e or tag == "1m" and args.train_e2e_1m:
        if meta.get("ws"):
            m = repeat("train", {"ws": meta["ws"], "trials": args.trials, "timeout": args.fit_timeout},
                       args.train_repeats, args.workdir, f"{label} train() end to end")
            out["train_e2e"] = m
            stages = "; ".join(f"{s} {t:.1f} s" for s, t in m["stages"])
            rows.append(row(f"{label} train() end to end ({args.trials} trials, MLflow)", m["rows"], m,
                            result=(f"test AUC learned {m['learned_test_auc']:.4f} vs rules {m['rules_test_auc']:.4f}"
                                    if m["learned_test_auc"] is not None else "points only"),
                            note=f"stages: {stages}; peak RSS {m['peak_rss_mb']:,} MB"))
        else:
            out["train_e2e"] = {"skipped": "bootstrapped frame has no workspace"}
    out["rows"] = rows
    return out


def section_score(args: argparse.Namespace) -> dict[str, Any]:
    suffix = "" if args.score_fit == "tuned" else "_fixed"
    tag = args.score_model
    if tag == "auto":
        tag = "1m" if (args.workdir / f"scorer_1m{suffix}" / "booster.txt").exists() else "100k"
    scorer = args.workdir / f"scorer_{tag}{suffix}"
    if not (scorer / "booster.txt").exists():
        raise RuntimeError(f"no scorer at {scorer}: run the {tag} training section first")
    folder, meta, _ = _data(args, tag)
    p = {"data": str(folder), "scorer": str(scorer), "rows": args.score_rows, "repeats": args.repeats,
         "store": str(args.workdir / "mlflow_score")}
    m = run_child("score", p, args.workdir, f"[score] {args.score_rows:,} rows")
    n = m["rows"]

    def stats(name: str) -> dict[str, float]:
        walls = [r["seconds"] for r in m["runs"][name]]
        cpus = [r["cpu_seconds"] for r in m["runs"][name]]
        return {"median": statistics.median(walls), "best": min(walls), "cpu_median": statistics.median(cpus),
                "all": [round(w, 3) for w in walls]}

    s = {name: stats(name) for name in m["runs"]}
    m["stats"] = s
    ref = s["booster(prepared DataFrame)"]
    ratio = {k: s["pyfunc"][k] / ref[k] for k in ("median", "best", "cpu_median")}
    ratio_fix = {k: s["pyfunc + proposed fast path"][k] / ref[k] for k in ("median", "best", "cpu_median")}
    m["ratio_pyfunc_over_booster"] = ratio
    m["ratio_proposed_over_booster"] = ratio_fix
    rate = n / s["pyfunc"]["median"]
    src = (f"model from the {tag} {args.score_fit} fit: {m['num_trees']} trees, num_leaves {m['num_leaves']}, "
           f"{m['features']} features ({len(m['categorical'])} categorical); input "
           + ("REPLICATED " if m["replicated"] else "") + f"{n:,} rows of the {tag} training frame"
           + (" (itself BOOTSTRAPPED)" if m["bootstrapped_source"] else "")
           + f" {m['input_dtypes']}")

    def srow(name: str, label: str, **kw: Any) -> dict[str, Any]:
        st = s[name]
        return row(label, n, None, wall=f"{st['median']:.2f} ({st['best']:.2f})", cpu=f"{st['cpu_median']:.1f}",
                   rate=f"{n / st['median']:,.0f}/s ({n / st['best']:,.0f})", **kw)

    rows = [
        srow("pyfunc", "[score] pyfunc.predict (models:/…@champion)", target=f">= {TARGET_SCORE_RATE // 1000}k/s",
             met=rate >= TARGET_SCORE_RATE,
             note=f"{src}; log_scorer_model {m['log_seconds']:.1f} s, load_model {m['load_seconds']:.1f} s, "
                  f"first (cold) call {m['cold_first_call_seconds']:.2f} s; CPU-time rate "
                  f"{n / s['pyfunc']['cpu_median']:,.0f}/CPU-s"),
        srow("scorer.score", "[score] LearnedScorer.score (no MLflow)"),
        srow("booster(prepared DataFrame)", "[score] booster.predict(prepare_matrix output)",
             result="reference of the ratio",
             note=f"prepare_matrix itself (not timed in this row) {m['prepare_matrix_once_seconds']:.2f} s"),
        srow("booster(ndarray C)", "[score] booster.predict(float64 ndarray, C order)", result="floor"),
        srow("booster(ndarray F)", "[score] booster.predict(float64 ndarray, F order)", result="floor"),
        row("[score] ratio pyfunc / booster(prepared)", n, None, result=f"{ratio['median']:.2f}x median, "
            f"{ratio['best']:.2f}x best, {ratio['cpu_median']:.2f}x CPU", target=f"<= {TARGET_SCORE_RATIO}x",
            met=ratio["median"] <= TARGET_SCORE_RATIO),
        srow("pyfunc + proposed fast path", "[score] pyfunc.predict + PROPOSED fast path (in-process patch)",
             result=f"ratio {ratio_fix['median']:.2f}x", target="(what-if, not product code)",
             note=f"outputs identical to the unpatched pyfunc: {m['proposed_equals_pyfunc']} "
                  f"(max |diff| probability {m['proposed_max_abs_diff_probability']:.3g}); array == prepared "
                  f"matrix values: {m['prepared_equals_array']}"),
    ]
    if args.diagnostics:
        d = run_child("score", {**p, "store": str(args.workdir / "mlflow_score_passive")}, args.workdir,
                      f"[score] {args.score_rows:,} rows, OMP_WAIT_POLICY=passive", env={"OMP_WAIT_POLICY": "passive"})
        ds = {}
        for name in ("pyfunc", "booster(prepared DataFrame)"):
            walls = [r["seconds"] for r in d["runs"][name]]
            ds[name] = {"median": statistics.median(walls), "best": min(walls), "all": [round(w, 3) for w in walls]}
        m["diagnostic_omp_passive"] = {"stats": ds, "breakdown_median": d["breakdown_median"],
                                       "load_before": d["load_before"], "load_after": d["load_after"]}
        pr, br = ds["pyfunc"], ds["booster(prepared DataFrame)"]
        rows.append(row("[score] pyfunc.predict [diagnostic: OMP_WAIT_POLICY=passive]", n, None,
                        wall=f"{pr['median']:.2f} ({pr['best']:.2f})",
                        rate=f"{n / pr['median']:,.0f}/s ({n / pr['best']:,.0f})",
                        result=f"ratio {pr['median'] / br['median']:.2f}x (booster {br['median']:.2f} s)",
                        note="a second child, same model and rows; only the OpenMP wait policy differs"))
    total = m["breakdown_median"]["total"]
    breakdown = [(k, v, v / total) for k, v in m["breakdown_median"].items()]
    m["breakdown_share"] = {k: round(share, 4) for k, _, share in breakdown}
    return {"rows": rows, "score": m, "breakdown": breakdown, "scorer_tag": tag}


def section_shipped(args: argparse.Namespace) -> dict[str, Any]:
    """Scoring throughput with the models the shipped configs produce, and rate vs trees."""
    scorers = dict(item.split("=", 1) for item in args.scorers.split(",") if item)
    built = {}
    if args.oulad_ws:
        out = args.workdir / "shipped_oulad"
        built["oulad"] = run_child("train_shipped", {"ws": str(args.oulad_ws), "out": str(out),
                                   "config": str(REPO / "configs" / "train_oulad.yaml")},
                                   args.workdir, "[shipped] train configs/train_oulad.yaml")
        scorers["oulad"] = str(out)
    if not scorers:
        raise SystemExit("--only shipped needs --scorers tag=DIR (e.g. from quality_bench.py) and/or --oulad-ws")
    rows, results = [], {}
    for tag, folder in scorers.items():
        r = run_child("score_trees", {"scorer": folder, "tag": tag, "rows": args.score_rows, "repeats": args.repeats,
                                      "store": str(args.workdir / f"mlflow_shipped_{tag}"),
                                      "compiled": args.compiled},
                      args.workdir, f"[shipped] score {args.score_rows:,} rows with the {tag} model")
        results[tag] = r
        st, n = r["stats"], r["rows"]
        ratio = r["ratio_pyfunc_over_booster_prepared"]
        labels = (("pyfunc", "pyfunc.predict (models:/…@champion)"),
                  ("pyfunc(compiled trees)", "pyfunc.predict, compiled trees (score --compiled)"),
                  ("scorer.score", "LearnedScorer.score"),
                  ("booster(prepared DataFrame)", "booster.predict(prepare_matrix output)"),
                  ("booster(ndarray)", "booster.predict(float64 ndarray)"))
        for key, label in labels:
            if key not in st:
                continue
            v, headline = st[key], key.startswith("pyfunc")
            note = ""
            if key == "pyfunc(compiled trees)":
                note = (f"compile + load {r['compile_seconds']:.1f} s (once per model, cached); max |probability "
                        f"difference| vs LightGBM pyfunc {r['compiled_max_abs_diff_probability']:.1e}; trees per "
                        "block (compiled_predictor on the array): " + ", ".join(
                            f"{b['trees_per_block']}: {b['rate_median'] / 1000:,.0f}k/s, {b['cpu_seconds_median']:.1f} CPU-s"
                            for b in r["compiled_block_sweep"]))
            rows.append(row(f"[{tag}: {r['num_trees']} trees, {r['num_leaves']} leaves] {label}", n, None,
                            wall=f"{v['median']:.2f} ({v['best']:.2f})", cpu=f"{v['cpu_median']:.1f}",
                            rate=f"{v['rate_median']:,.0f}/s",
                            target=f">= {TARGET_SCORE_RATE // 1000}k/s" if headline else "-",
                            met=(v["rate_median"] >= TARGET_SCORE_RATE) if headline else None, note=note))
        rows.append(row(f"[{tag}] ratio pyfunc / booster(prepared)", n, None, result=f"{ratio:.2f}x "
                        f"(vs ndarray {r['ratio_pyfunc_over_booster_ndarray']:.2f}x)",
                        target=f"<= {TARGET_SCORE_RATIO}x", met=ratio <= TARGET_SCORE_RATIO,
                        note="booster.predict on ndarray == on prepared frame: "
                             f"{r['array_equals_prepared_predictions']}; rate vs trees (booster.predict, ndarray): "
                             + ", ".join(f"{t['trees']}: {t['rate_median'] / 1000:,.0f}k/s" for t in r["trees_sweep"])))
    return {"rows": rows, "shipped": results, "trained": built}


# ----------------------------------------------------------------------------- output


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    header = ["step", "rows", "wall s med (best)", "cpu s", "contacts/s med (best)", "result", "target", "met"]
    body = [[r["name"], f"{r['rows']:,}" if isinstance(r["rows"], int) else "-", r["wall"], r["cpu"], r["rate"],
             r["result"], r["target"], r["met"] or "-"] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    print(f"\n{title}")
    for i, line in enumerate([header, *body]):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for r in rows:
        if r["note"]:
            print(f"  - {r['name']}: {r['note']}")


def print_breakdown(breakdown: list[tuple[str, float, float]]) -> None:
    print("\n  pyfunc.predict breakdown (median of the instrumented calls):")
    for name, seconds, share in breakdown:
        print(f"    {name:<66} {seconds:7.3f} s  {share:6.1%}")


def write_json(path: Path, sections: dict[str, Any], machine: dict[str, Any], args: argparse.Namespace) -> None:
    doc: dict[str, Any] = {}
    if path.exists():
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError:
            doc = {}
    doc.setdefault("sections", {})
    run_args = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    for name, sec in sections.items():
        doc["sections"][name] = {"machine": machine, "args": run_args, **sec}
    doc["benchmark"] = "benchmarks/training_bench.py"
    doc["targets"] = {"score_contacts_per_s": TARGET_SCORE_RATE, "score_ratio_pyfunc_over_booster": TARGET_SCORE_RATIO}
    doc["updated"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/propensity-train-bench"),
                    help="temporary data (Parquet, workspaces, MLflow stores); never inside the repository")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file (sections merged)")
    ap.add_argument("--only", default=None, help="comma list of sections: 100k,1m,score (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--contacts-100k", type=int, default=36_000,
                    help="world size giving ~100k training rows with configs/train.yaml (~2.8 rows per contact)")
    ap.add_argument("--contacts-1m", type=int, default=356_000, help="world size giving ~1M training rows")
    ap.add_argument("--bootstrap-1m", action="store_true",
                    help="resample the 100k frame up to --bootstrap-rows instead of building a 1M world")
    ap.add_argument("--bootstrap-rows", type=int, default=1_000_000)
    ap.add_argument("--trials", type=int, default=5, help="Optuna trials of the tuned fit and of train()")
    ap.add_argument("--fit-timeout", type=float, default=7200.0,
                    help="ModelConfig.timeout_seconds: large, so the budget does not cut the search")
    ap.add_argument("--fit-repeats", type=int, default=3, help="fresh-process repeats of each 100k fit")
    ap.add_argument("--fit-repeats-1m", type=int, default=1, help="repeats of each 1M fit")
    ap.add_argument("--no-train-e2e", action="store_true", help="skip train() end to end at 100k")
    ap.add_argument("--train-e2e-1m", action="store_true", help="also time train() end to end at 1M")
    ap.add_argument("--train-repeats", type=int, default=1)
    ap.add_argument("--score-rows", type=int, default=1_000_000)
    ap.add_argument("--scorers", default="",
                    help="section shipped: tag=DIR,... saved scorers with features.parquet (quality_bench.py writes one)")
    ap.add_argument("--no-compiled", dest="compiled", action="store_false",
                    help="section shipped: skip the compiled-trees pyfunc (extra [fast])")
    ap.add_argument("--oulad-ws", type=Path, default=None,
                    help="section shipped: an OULAD workspace; trains configs/train_oulad.yaml on it and scores")
    ap.add_argument("--score-model", choices=("auto", "100k", "1m"), default="auto",
                    help="whose scorer and frame to score with (auto: 1m when it exists)")
    ap.add_argument("--score-fit", choices=("tuned", "fixed"), default="tuned",
                    help="score with the scorer of the tuned fit (default) or of the tune=False fit; "
                         "the latter is written to the JSON section score_fixed_model")
    ap.add_argument("--fits", default="fixed,tuned",
                    help="which fits the training sections run (a subset is written to its own JSON section)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of each scoring variant")
    ap.add_argument("--regenerate", action="store_true", help="rebuild the cached training frames")
    ap.add_argument("--no-diagnostics", dest="diagnostics", action="store_false",
                    help="skip the OMP_WAIT_POLICY=passive diagnostic runs (100k fixed fit, scoring)")
    args = ap.parse_args(argv)
    args.workdir = args.workdir.resolve()
    if REPO in args.workdir.parents or args.workdir == REPO:
        ap.error("--workdir must be outside the repository")
    args.sections = [s for s in (args.only or "100k,1m,score").split(",") if s]
    args.fits = sorted(f for f in args.fits.split(",") if f)
    if not args.fits or set(args.fits) - {"fixed", "tuned"}:
        ap.error("--fits takes fixed and/or tuned")
    unknown = set(args.sections) - {"100k", "1m", "score", "shipped"}
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        return child_main(*argv[1:4])
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    machine = machine_facts()
    _log(f"machine: {machine['nproc']} cpus, {machine['uptime']}")
    for key in ("100k", "1m", "score", "shipped"):
        if key not in args.sections:
            continue
        started, load_start, uptime_start = time.perf_counter(), os.getloadavg(), _uptime()
        if key == "shipped":
            sec = section_shipped(args)
        else:
            sec = section_score(args) if key == "score" else section_train(args, key)
        sec.update(section_seconds=round(time.perf_counter() - started, 1),
                   loadavg_start=[round(x, 2) for x in load_start], loadavg_end=[round(x, 2) for x in os.getloadavg()],
                   uptime_start=uptime_start, uptime_end=_uptime())
        if key == "shipped":
            name = "score_shipped"
        elif key == "score":
            name = "score" if args.score_fit == "tuned" else "score_fixed_model"
        else:
            name = f"train_{key}" + ("" if args.fits == ["fixed", "tuned"] else f"_{'_'.join(args.fits)}_only")
        write_json(args.json, {name: sec}, machine, args)  # keep what finished if a later one fails
        print_table(f"{name}  ({machine['nproc']} cpus; load {sec['loadavg_start'][0]} -> {sec['loadavg_end'][0]}; "
                    f"{sec['uptime_end']})", sec["rows"])
        if key == "score":
            print_breakdown(sec["breakdown"])
        sys.stdout.flush()
    print(f"\nresults: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
