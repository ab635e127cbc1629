import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from propensity.pipelines.training.leakage import (
    LeakageConfig,
    LeakageError,
    check_leakage,
    raise_for_leakage,
    single_feature_auc,
)
from propensity.pipelines.training.model import ModelConfig, fit_lightgbm, prepare_matrix


def _honest(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, size=n)
    frame = pd.DataFrame({
        "email_open__count_30d": rng.poisson(1 + 2 * label),
        "tenure_days": rng.exponential(200, size=n),
        "plan": rng.choice(["free", "pro", "team"], size=n),
    })
    return frame, label


def test_a_feature_equal_to_the_label_plus_tiny_noise_is_caught_and_named_in_the_error():
    X, y = _honest()
    X["score_copy"] = y + np.random.default_rng(1).normal(scale=0.01, size=len(y))
    report = check_leakage(X, y)
    assert report.suspects["feature"].tolist() == ["score_copy"]
    assert report.suspects["reason"].iloc[0] == "single-feature AUC 1.000 > 0.98"
    with pytest.raises(LeakageError) as caught:
        raise_for_leakage(report)
    assert isinstance(caught.value, ValueError)
    assert "score_copy" in str(caught.value) and "allow: [score_copy]" in str(caught.value)


def test_an_outcome_derived_name_is_caught_even_when_its_auc_is_unremarkable():
    X, y = _honest()
    X["days_to_unregistration"] = np.random.default_rng(2).normal(size=len(y))
    X["Final_Result_Code"] = np.random.default_rng(3).normal(size=len(y))  # case does not hide it
    report = check_leakage(X, y)
    suspects = report.suspects.set_index("feature")
    assert set(suspects.index) == {"days_to_unregistration", "Final_Result_Code"}
    assert suspects.loc["days_to_unregistration", "reason"] == "name matches 'unregist'"
    assert suspects.loc["days_to_unregistration", "auc"] < 0.6
    with pytest.raises(LeakageError) as caught:
        raise_for_leakage(report)
    message = str(caught.value)
    for expected in ("days_to_unregistration", "Final_Result_Code", "name matches 'final_result'", "leakage:",
                     "allow: ["):
        assert expected in message


def test_allow_listing_a_suspect_lets_training_proceed_and_reports_the_override():
    X, y = _honest()
    X["days_to_unregistration"] = np.random.default_rng(2).normal(size=len(y))
    report = check_leakage(X, y, LeakageConfig(allow=("days_to_unregistration",)))
    assert report.ok and report.suspects.empty
    assert report.allowed == ["days_to_unregistration"]
    raise_for_leakage(report)  # no error

    matrix, _ = prepare_matrix(X, list(X.columns))
    half = len(X) // 2
    model = fit_lightgbm(matrix.iloc[:half], y[:half], matrix.iloc[half:], y[half:],
                         ModelConfig(tune=False, n_jobs=1, max_estimators=100))
    assert "days_to_unregistration" in model.feature_names


def test_an_honest_strong_feature_below_the_threshold_is_not_flagged():
    X, y = _honest()
    X["strong"] = 2.5 * y + np.random.default_rng(4).normal(size=len(y))
    report = check_leakage(X, y)
    assert 0.9 < report.aucs["strong"] < 0.98
    assert report.ok
    assert report.allowed == []


def test_a_categorical_leak_is_caught_through_its_per_category_label_rate():
    X, y = _honest()
    rng = np.random.default_rng(5)
    X["crm_status"] = np.where(y == 1, "won", rng.choice(["open", "lost"], size=len(y)))
    X["crm_status"] = X["crm_status"].astype("category")
    report = check_leakage(X, y)
    assert report.suspects["feature"].tolist() == ["crm_status"]
    assert report.suspects["auc"].iloc[0] == 1.0


def test_an_id_like_text_column_is_not_mistaken_for_a_leak():
    X, y = _honest()
    X["email"] = [f"person{i}@example.com" for i in range(len(y))]
    aucs = single_feature_auc(X, y)
    assert aucs["email"] == 0.5
    assert check_leakage(X, y).ok


def test_single_feature_auc_matches_sklearn_in_either_direction_and_ranks_missing_lowest():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, size=3000)
    X = pd.DataFrame({
        "up": rng.normal(size=3000) + y,
        "down": -rng.normal(size=3000) - y,
        "counts": rng.poisson(1 + y).astype("float64"),
        "flag": (rng.random(3000) < 0.2 + 0.3 * y),
    })
    X.loc[y == 1, "up"] = X.loc[y == 1, "up"].where(rng.random((y == 1).sum()) > 0.2)  # missing among positives
    aucs = single_feature_auc(X, y)
    for name in X.columns:
        values = X[name].astype("float64")
        expected = roc_auc_score(y, values.fillna(values.min() - 1))
        assert aucs[name] == pytest.approx(max(expected, 1 - expected), abs=1e-12)
    assert aucs["down"] > 0.7


def test_constant_and_all_missing_features_score_one_half():
    y = np.array([0, 1] * 50)
    X = pd.DataFrame({"constant": 3.0, "missing": np.nan, "text": "same"}, index=range(100))
    assert single_feature_auc(X, y).tolist() == [0.5, 0.5, 0.5]


def test_single_feature_auc_needs_both_classes():
    with pytest.raises(ValueError, match="both"):
        single_feature_auc(pd.DataFrame({"x": [1.0, 2.0]}), [1, 1])
