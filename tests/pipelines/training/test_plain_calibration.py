"""A saved scorer's calibration as plain numbers (calibration.json): the estimators' own numbers,
read without scikit-learn (issue 14: a cold `propensity explain` spent ~1 s importing it)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from propensity.pipelines.training.calibration import ProbabilityCalibrator, ScoreMapper
from propensity.pipelines.training.calibration_maps import CalibrationMap, ScoreMap
from propensity.pipelines.training.model import (
    ModelConfig,
    fit_lightgbm,
    prepare_matrix,
)
from propensity.pipelines.training.scorer import (
    CALIBRATION_JSON,
    LearnedScorer,
    load_scorer,
)


def _raw_and_labels(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = rng.beta(1.2, 6.0, size=n)
    labels = (rng.random(n) < np.clip(raw * 1.6, 0, 1)).astype(int)
    return raw, labels


def _round_trip(data: dict) -> dict:
    return json.loads(json.dumps(data))


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_the_plain_calibration_map_gives_the_calibrators_numbers_after_json(method):
    raw, labels = _raw_and_labels(4000, 1)
    calibrator = ProbabilityCalibrator(method=method).fit(raw, labels)
    plain = CalibrationMap.from_dict(_round_trip(calibrator.as_map().to_dict()))
    scored, _ = _raw_and_labels(3000, 2)
    scored[:3] = [0.0, 1.0, 0.5]  # the ends and a value inside
    np.testing.assert_array_equal(plain.transform(scored), calibrator.transform(scored))
    if method == "platt":  # the old way, through scikit-learn's LogisticRegression
        from propensity.pipelines.training.calibration_maps import (
            PROBABILITY_FLOOR,
            logit_column,
        )

        expected = calibrator.estimator_.predict_proba(logit_column(scored))[:, 1]
        np.testing.assert_array_equal(plain.transform(scored), np.clip(expected, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR))


@pytest.mark.parametrize("method", ["rate_matching", "quantile"])
def test_the_plain_score_map_gives_the_mappers_numbers_after_json(method):
    raw, labels = _raw_and_labels(4000, 3)
    rule = np.clip(raw * 12 + np.random.default_rng(4).normal(0, 0.5, raw.size), 0, 5)
    mapper = ScoreMapper(method=method).fit(raw, labels, rule)
    plain = ScoreMap.from_dict(_round_trip(mapper.to_dict()))
    probability = np.linspace(0, 1, 2001)
    np.testing.assert_array_equal(plain.transform(probability), mapper.transform(probability))


def test_a_score_map_of_one_knot_is_a_step_there():
    plain = ScoreMap.of([0.3], [2.5], 1.0, 4.0)
    np.testing.assert_array_equal(plain.transform([0.1, 0.3, 0.9]), [1.0, 2.5, 4.0])


def test_plain_maps_refuse_what_no_fit_gives():
    with pytest.raises(ValueError, match="isotonic"):
        CalibrationMap("isotonic")
    with pytest.raises(ValueError, match="method"):
        CalibrationMap("sigmoid")
    with pytest.raises(ValueError, match="strictly increasing"):
        ScoreMap.of([0.2, 0.2], [1.0, 2.0], 0.0, 5.0)
    with pytest.raises(ValueError, match="raw_probability"):
        CalibrationMap("platt", coef=1.0).transform([[0.1, 0.2]])


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"signal": rng.normal(size=n), "visits": rng.poisson(3, size=n).astype("float64")})
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * frame["signal"] - 1.0)))).astype(int)
    return frame


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    train, valid = _frame(3000, 1), _frame(1500, 2)
    names = ["signal", "visits"]
    X_train, categories = prepare_matrix(train, names)
    X_valid, _ = prepare_matrix(valid, names, categories)
    model = fit_lightgbm(X_train, train["label"], X_valid, valid["label"],
                         ModelConfig(n_jobs=1, tune=False, early_stopping_rounds=20, max_estimators=100))
    raw = model.predict_raw(valid)
    calibrator = ProbabilityCalibrator(method="isotonic").fit(raw, valid["label"])
    mapper = ScoreMapper().fit(calibrator.transform(raw), valid["label"], np.clip(valid["signal"] + 2.5, 0, 5))
    scorer = LearnedScorer(booster=model.booster, feature_names=model.feature_names, categories=model.categories,
                           calibrator=calibrator, mapper=mapper, best_iteration=model.best_iteration)
    folder = scorer.save(tmp_path_factory.mktemp("scorer") / "scorer")
    rows = _frame(800, 3)
    path = folder.parent / "rows.parquet"
    rows.to_parquet(path)
    return folder, path, scorer.score(rows)


# A fresh interpreter: loads and scores, then says which heavy modules came in; then checks that
# scikit-learn, imported after LightGBM, still works and LightGBM still trains.
_LOAD_AND_SCORE = """
import sys
import pandas as pd
from propensity.pipelines.training.scorer import load_scorer
rows = pd.read_parquet(sys.argv[2])
load_scorer(sys.argv[1]).score(rows).to_parquet(sys.argv[3])
print("heavy:" + ",".join(sorted(m for m in ("sklearn", "scipy.stats", "mlflow", "shap") if m in sys.modules)))
from sklearn.isotonic import IsotonicRegression
from propensity.pipelines.training.lgbm import lgb
IsotonicRegression().fit([0.0, 1.0, 2.0], [0, 1, 1])
lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(rows[["signal", "visits"]], rows["label"]), 5)
print("trained")
"""


def test_a_saved_scorer_loads_and_scores_without_scikit_learn(saved, tmp_path):
    folder, rows, expected = saved
    assert (folder / CALIBRATION_JSON).is_file()
    out = tmp_path / "scored.parquet"
    ran = subprocess.run([sys.executable, "-c", _LOAD_AND_SCORE, str(folder), str(rows), str(out)],
                         capture_output=True, text=True, check=True)
    heavy, trained = ran.stdout.split()
    assert heavy == "heavy:", f"loading a scorer imported {heavy}"
    assert trained == "trained"
    pd.testing.assert_frame_equal(pd.read_parquet(out), expected)


def test_a_scorer_saved_before_calibration_json_scores_the_same_from_its_pickle(saved, tmp_path):
    folder, rows, expected = saved
    old = tmp_path / "old"
    old.mkdir()
    for name in ("booster.txt", "calibration.pkl", "scorer.json"):
        (old / name).write_bytes((folder / name).read_bytes())
    scorer = load_scorer(old)
    assert isinstance(scorer.calibrator, ProbabilityCalibrator)
    pd.testing.assert_frame_equal(scorer.score(pd.read_parquet(rows)), expected)
    plain = load_scorer(folder)
    assert isinstance(plain.calibrator, CalibrationMap) and isinstance(plain.mapper, ScoreMap)
