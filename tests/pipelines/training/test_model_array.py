"""The scoring fast path (`model_array`) and the reproducibility of a fit across float noise."""

import numpy as np
import pandas as pd
import pytest

from propensity.pipelines.training.calibration import ProbabilityCalibrator, ScoreMapper
from propensity.pipelines.training.model import ModelConfig, fit_lightgbm, model_array, prepare_matrix
from propensity.pipelines.training.scorer import LearnedScorer

FEATURES = ["signal", "plan", "tier", "region", "is_admin", "flag", "visits"]
FAST = {"n_jobs": 1, "early_stopping_rounds": 20, "max_estimators": 200, "tune": False}


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "signal": rng.normal(size=n),
        "plan": pd.Series(rng.choice(["free", "pro", "team"], size=n), dtype="str"),
        "tier": pd.Series(rng.choice(["a", "b", "c"], size=n), dtype=object),
        "region": pd.Series(rng.choice(["eu", "us"], size=n)).astype("category"),
        "is_admin": rng.random(n) < 0.3,
        "flag": pd.array(np.where(rng.random(n) < 0.1, None, rng.random(n) < 0.5), dtype="boolean"),
        "visits": pd.array(np.where(rng.random(n) < 0.1, None, rng.poisson(3, size=n)), dtype="Int64"),
    })
    logit = 1.5 * frame["signal"] + 1.0 * (frame["plan"] == "pro") - 0.5 * (frame["tier"] == "c") - 0.5
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


@pytest.fixture(scope="module")
def fitted():
    train, valid = _frame(3000, 1), _frame(1500, 2)
    X_train, categories = prepare_matrix(train, FEATURES)
    X_valid, _ = prepare_matrix(valid, FEATURES, categories)
    return fit_lightgbm(X_train, train["label"], X_valid, valid["label"], ModelConfig(**FAST)), valid


def _scoring_rows() -> pd.DataFrame:
    rows = _frame(500, 3)
    # unseen and missing categories, in each kind of text column
    rows.loc[0, "plan"], rows.loc[1, "plan"] = "enterprise", None
    rows.loc[2, "tier"], rows.loc[3, "tier"] = "z", None
    rows["region"] = rows["region"].cat.add_categories(["apac"])
    rows.loc[4, "region"], rows.loc[5, "region"] = "apac", None
    return rows


def test_model_array_holds_the_values_lightgbm_reads_from_prepare_matrix(fitted):
    model, _ = fitted
    rows = _scoring_rows()
    array = model_array(rows, model.feature_names, model.categories)
    prepared, _ = prepare_matrix(rows, model.feature_names, model.categories)
    as_numbers = prepared.apply(
        lambda c: c.cat.codes.replace(-1, np.nan) if isinstance(c.dtype, pd.CategoricalDtype) else c
    ).to_numpy(dtype="float64")
    assert array.dtype == np.float64 and array.flags.f_contiguous and array.shape == (500, len(FEATURES))
    np.testing.assert_array_equal(array, as_numbers)  # NaN == NaN here
    plan = model.feature_names.index("plan")
    assert np.isnan(array[:2, plan]).all()  # unseen and missing
    assert np.isnan(array[4:6, model.feature_names.index("region")]).all()


def test_model_array_predictions_are_bit_identical_to_the_prepared_frame(fitted):
    model, _ = fitted
    rows = _scoring_rows()
    prepared, _ = prepare_matrix(rows, model.feature_names, model.categories)
    by_frame = model.booster.predict(prepared, num_iteration=model.best_iteration)
    by_array = model.booster.predict(model_array(rows, model.feature_names, model.categories),
                                     num_iteration=model.best_iteration)
    np.testing.assert_array_equal(by_array, by_frame)


def test_the_scorer_scores_through_the_array_path_like_the_prepared_frame(fitted):
    model, valid = fitted
    raw = model.predict_raw(valid)
    calibrator = ProbabilityCalibrator(method="isotonic").fit(raw, valid["label"])
    mapper = ScoreMapper().fit(calibrator.transform(raw), valid["label"], np.clip(valid["signal"] + 2.5, 0, 5))
    scorer = LearnedScorer(booster=model.booster, feature_names=model.feature_names, categories=model.categories,
                           calibrator=calibrator, mapper=mapper, best_iteration=model.best_iteration)
    rows = _scoring_rows()
    scored = scorer.score(rows)
    expected = np.clip(calibrator.transform(model.predict_raw(rows)), 0, 1)
    np.testing.assert_array_equal(scored["probability"].to_numpy(), expected)
    assert scored.index.equals(rows.index)


def test_model_array_refuses_text_where_the_model_had_numbers_and_names_missing_columns(fitted):
    model, _ = fitted
    rows = _scoring_rows().assign(signal="high")
    with pytest.raises(ValueError, match="signal"):
        model_array(rows, model.feature_names, model.categories)
    with pytest.raises(KeyError, match="visits"):
        model_array(rows.drop(columns="visits"), model.feature_names, model.categories)


def test_a_fit_does_not_move_when_features_differ_only_in_the_last_bits():
    # Parallel SQL sums come out a few ULPs apart from build to build; values that are equal
    # in exact arithmetic then look distinct to LightGBM's binning.
    rng = np.random.default_rng(5)
    n = 6000
    levels = np.cumsum(rng.random(1500))  # 1,500 distinct values, each repeated: > 255 bins' worth
    value = levels[rng.integers(0, levels.size, n)]
    label = (rng.random(n) < 1 / (1 + np.exp(-(value / levels[-1] * 4 - 2)))).astype(int)
    X = pd.DataFrame({"decayed": value, "other": rng.normal(size=n)})
    noisy = X.assign(decayed=X["decayed"] * (1 + rng.integers(-3, 4, n) * np.finfo(float).eps))
    assert (noisy["decayed"] != X["decayed"]).mean() > 0.5
    train, valid = slice(0, 4000), slice(4000, n)
    config = ModelConfig(n_jobs=1, tune=False, early_stopping_rounds=20, max_estimators=100)
    clean = fit_lightgbm(X[train], label[train], X[valid], label[valid], config)
    shaken = fit_lightgbm(noisy[train], label[train], noisy[valid], label[valid], config)
    assert clean.best_iteration == shaken.best_iteration
    np.testing.assert_array_equal(clean.predict_raw(X), shaken.predict_raw(X))
