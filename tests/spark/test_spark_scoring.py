"""Batch scoring on Spark with the registered MLflow model equals scoring on one machine;
the training set built on Spark and on PostgreSQL equals the one built on DuckDB."""

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from propensity.features.build import build_features, discover_event_types, feature_columns
from propensity.features.config import FeatureConfig
from propensity.features.spine import spine_at
from propensity.pipelines.jobs import SpineChoice, run_model_scores
from propensity.pipelines.rules import load_rules
from propensity.pipelines.rules.score import score_contacts
from propensity.pipelines.spark.scoring import run_spark_model_scores
from propensity.pipelines.training.calibration import ProbabilityCalibrator, ScoreMapper
from propensity.pipelines.training.config import TrainConfig
from propensity.pipelines.training.dataset import assemble_training_set
from propensity.pipelines.training.model import ModelConfig, fit_lightgbm, prepare_matrix
from propensity.pipelines.training.scorer import LearnedScorer
from propensity.pipelines.training.tracking import configure_tracking, log_scorer_model

from tests.spark.compare import assert_same_table

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
AS_OF = pd.Timestamp("2025-04-15").to_pydatetime()


def _register_model(ws, world) -> str:
    """A small real model (LightGBM + calibration + 0-5 map) registered in the workspace's MLflow."""
    con = ws.ibis_connection()
    events, contacts = con.table("events"), con.table("contacts")
    config = FeatureConfig()
    spine = spine_at(events, AS_OF, contacts)
    event_types = discover_event_types(events, config)
    features = build_features(events, spine, config, contacts=contacts, event_types=event_types).execute()
    # a query's row order is the engine's: fix it, so the halves below do not move with the plan
    features = features.sort_values("contact_id", ignore_index=True)
    rules = load_rules(ROOT / "configs" / "rules" / "saas.yaml")
    rule_score = score_contacts(events, spine, rules, contacts=contacts.execute()).set_index("contact_id")["rule_score"]
    outcomes = world.outcomes
    window = outcomes[(outcomes["ts"] >= AS_OF) & (outcomes["ts"] < AS_OF + pd.Timedelta(days=45))]
    y = features["contact_id"].isin(window["contact_id"]).astype(int).to_numpy()
    assert 5 < y.sum() < len(y) - 5
    names = feature_columns(features)
    X, categories = prepare_matrix(features, names)
    half = np.arange(len(X)) % 2 == 0
    fitted = fit_lightgbm(X[half], y[half], X[~half], y[~half],
                          ModelConfig(tune=False, max_estimators=40, early_stopping_rounds=10, n_jobs=1))
    raw = fitted.predict_raw(X)
    calibrator = ProbabilityCalibrator(method="platt").fit(raw[~half], y[~half])
    probability = calibrator.transform(raw)
    mapper = ScoreMapper(method="quantile").fit(probability[~half], y[~half],
                                                rule_score.reindex(features["contact_id"]).to_numpy()[~half])
    scorer = LearnedScorer(
        booster=fitted.booster, feature_names=fitted.feature_names, categories=fitted.categories,
        calibrator=calibrator, mapper=mapper, best_iteration=fitted.best_iteration,
        feature_config=config.model_dump(mode="json"), event_types=event_types,
        metadata={"bands": [[b.name, b.min_score] for b in rules.bands]},
    )
    configure_tracking(ws.path, None, "propensity")
    with mlflow.start_run():
        _, version = log_scorer_model(scorer, features, "propensity")
    return version


def test_spark_batch_scores_equal_single_machine_scores(world_ws, spark_tables, tmp_path):
    ws, world = world_ws
    version = _register_model(ws, world)
    choice = SpineChoice(as_of=AS_OF)
    expected = run_model_scores(ws, choice, version, "propensity")
    run = run_spark_model_scores(ws, choice, version, "propensity", spark_tables, tmp_path / "scores")
    actual = pd.read_parquet(tmp_path / "scores")
    assert run.rows == len(expected) == len(actual)
    # 10 distinct probabilities on 388 rows with contact_id-ordered halves (40 trees at most)
    assert expected["probability"].nunique() > 5, "a constant model would prove nothing"
    assert_same_table(expected.assign(band=expected["band"].astype("string")), actual)


def test_training_set_built_on_another_engine_equals_duckdb_with_negative_sampling(world_ws, engine_tables):
    ws, _ = world_ws
    config = TrainConfig.model_validate({
        "rules": str(ROOT / "configs/rules/saas.yaml"),
        "grid": {"first": "2025-02-01", "last": "2025-04-05", "step_days": 30},
        # min_positives 1: this checks engine parity of a tiny set; the positives gate now runs inside it
        "horizon_days": 20, "negative_sample_rate": 0.5, "data_end": "2025-05-31", "min_positives": 1,
    })
    rules = load_rules(config.rules)
    # a narrower feature set than the parity test's: the same code path, a smaller Spark plan
    features = FeatureConfig(windows_days=(7, 30), half_lives_days=(7.0,), account_features=False,
                             event_types=("email_open", "page_view", "demo_request"))
    con = ws.ibis_connection()
    outcomes = ws.table("outcomes")
    expected = assemble_training_set(con, config, rules, features, events=con.table("events"),
                                     contacts=con.table("contacts"), outcomes=outcomes)
    actual = assemble_training_set(engine_tables.con, config, rules, features,
                                   events=engine_tables.events, contacts=engine_tables.contacts, outcomes=outcomes)
    train = expected.split("train")
    assert train["label"].sum() > 0 and len(expected.frame["as_of"].unique()) == 3
    assert set(train.loc[train["label"] == 0, "weight"]) == {2.0}
    assert set(expected.frame.loc[expected.frame["split"] != "train", "weight"]) == {1.0}
    assert_same_table(expected.frame.drop(columns="label_end"), actual.frame.drop(columns="label_end"))
