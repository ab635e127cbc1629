import numpy as np
import pandas as pd
import pytest

from propensity.pipelines.training.model import (
    DEFAULT_PARAMS,
    ModelConfig,
    SearchSpace,
    feature_importance,
    fit_lightgbm,
    prepare_matrix,
)

FEATURES = ["signal", "noise_1", "noise_2", "plan", "is_admin", "visits"]
# one thread: small fits are faster, and steadier when other test processes share the cores
FAST = {"n_jobs": 1, "early_stopping_rounds": 20, "max_estimators": 300}


def _frame(n, seed):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "signal": rng.normal(size=n),
        "noise_1": rng.normal(size=n),
        "noise_2": rng.normal(size=n),
        "plan": rng.choice(["free", "pro", "team"], size=n),
        "is_admin": rng.random(n) < 0.3,
        "visits": pd.array(rng.poisson(3, size=n), dtype="Int64"),
    })
    logit = 1.5 * frame["signal"] + 1.0 * (frame["plan"] == "pro") - 0.5
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


@pytest.fixture(scope="module")
def splits():
    train, valid = _frame(3000, seed=1), _frame(1500, seed=2)
    X_train, categories = prepare_matrix(train, FEATURES)
    X_valid, _ = prepare_matrix(valid, FEATURES, categories)
    return X_train, train["label"], X_valid, valid["label"], valid


def test_prepare_matrix_keeps_category_codes_stable_across_frames():
    train = pd.DataFrame({"plan": ["pro", "free", "team", "pro"]})
    later = pd.DataFrame({"plan": ["team", "pro"]})  # different order, one value missing
    X_train, categories = prepare_matrix(train, ["plan"])
    X_later, _ = prepare_matrix(later, ["plan"], categories)
    assert categories == {"plan": ["free", "pro", "team"]}
    assert list(X_later["plan"].cat.categories) == list(X_train["plan"].cat.categories)
    assert X_later["plan"].cat.codes.tolist() == [2, 1]
    assert X_train["plan"].cat.codes.tolist() == [1, 0, 2, 1]


def test_prepare_matrix_maps_unseen_categories_to_missing():
    _, categories = prepare_matrix(pd.DataFrame({"plan": ["free", "pro"]}), ["plan"])
    X, _ = prepare_matrix(pd.DataFrame({"plan": pd.Series(["pro", "enterprise", None], dtype="category")}),
                          ["plan"], categories)
    assert X["plan"].tolist()[0] == "pro"
    assert X["plan"].isna().tolist() == [False, True, True]
    assert list(X["plan"].cat.categories) == ["free", "pro"]


def test_prepare_matrix_makes_booleans_and_integers_float64_and_leaves_the_input_alone():
    frame = pd.DataFrame({
        "flag": pd.array([True, None, False], dtype="boolean"),
        "count": pd.array([1, None, 3], dtype="Int64"),
        "plain": [True, False, True],
        "other": ["kept", "as", "is"],
    })
    before = frame.copy()
    X, categories = prepare_matrix(frame, ["count", "flag", "plain"])
    assert list(X.columns) == ["count", "flag", "plain"]
    assert (X.dtypes == "float64").all()
    assert X["flag"].tolist()[0::2] == [1.0, 0.0] and np.isnan(X["flag"].iloc[1])
    assert categories == {}
    pd.testing.assert_frame_equal(frame, before)


def test_prepare_matrix_refuses_a_text_column_that_was_numeric_at_training():
    _, categories = prepare_matrix(pd.DataFrame({"size": [1.0, 2.0]}), ["size"])
    with pytest.raises(ValueError, match="size"):
        prepare_matrix(pd.DataFrame({"size": ["small", "large"]}), ["size"], categories)


def test_prepare_matrix_names_missing_feature_columns():
    with pytest.raises(KeyError, match="visits"):
        prepare_matrix(pd.DataFrame({"signal": [1.0]}), ["signal", "visits"])


def test_fit_lightgbm_learns_a_planted_signal_with_native_categoricals(splits):
    X_train, y_train, X_valid, y_valid, valid = splits
    model = fit_lightgbm(X_train, y_train, X_valid, y_valid, ModelConfig(n_trials=3, **FAST))
    assert model.valid_auc > 0.75
    assert model.categories == {"plan": ["free", "pro", "team"]}
    assert model.booster.dump_model()["feature_infos"]["plan"]["values"]  # split as a category
    probabilities = model.predict_raw(valid)  # raw rows are prepared with the stored categories
    assert probabilities.shape == (len(valid),)
    assert ((probabilities > 0) & (probabilities < 1)).all()
    np.testing.assert_array_equal(probabilities, model.booster.predict(X_valid, num_iteration=model.best_iteration))


def test_fit_lightgbm_gives_identical_results_for_the_same_seed(splits):
    X_train, y_train, X_valid, y_valid, _ = splits
    config = ModelConfig(n_trials=3, seed=7, **FAST)
    first = fit_lightgbm(X_train, y_train, X_valid, y_valid, config)
    second = fit_lightgbm(X_train, y_train, X_valid, y_valid, config)
    assert first.valid_auc == second.valid_auc
    assert first.params == second.params
    assert first.best_iteration == second.best_iteration
    assert first.trials["value"].tolist() == second.trials["value"].tolist()
    np.testing.assert_array_equal(first.predict_raw(X_valid), second.predict_raw(X_valid))
    other = fit_lightgbm(X_train, y_train, X_valid, y_valid, ModelConfig(n_trials=3, seed=8, **FAST))
    assert other.trials["params_learning_rate"].tolist()[1:] != first.trials["params_learning_rate"].tolist()[1:]


def test_fit_lightgbm_without_tuning_fits_the_defaults_once_and_still_stops_early(splits):
    X_train, y_train, X_valid, y_valid, _ = splits
    calls = []
    config = ModelConfig(tune=False, n_jobs=1, early_stopping_rounds=10, max_estimators=2000)
    model = fit_lightgbm(X_train, y_train, X_valid, y_valid, config, progress=lambda *a: calls.append(a))
    assert model.trials.empty
    assert {k: model.params[k] for k in DEFAULT_PARAMS} == dict(DEFAULT_PARAMS)
    assert model.params["deterministic"] and model.params["seed"] == 0
    assert 0 < model.best_iteration < 2000
    assert model.valid_auc > 0.75
    assert calls == [(1, 1)]


def test_fit_lightgbm_runs_exactly_n_trials_and_reports_progress(splits):
    X_train, y_train, X_valid, y_valid, _ = splits
    calls = []
    model = fit_lightgbm(X_train, y_train, X_valid, y_valid, ModelConfig(n_trials=2, **FAST),
                         progress=lambda *a: calls.append(a))
    assert len(model.trials) == 2
    assert calls == [(1, 2), (2, 2)]
    assert model.trials["params_learning_rate"].iloc[0] == DEFAULT_PARAMS["learning_rate"]  # defaults go first
    best = model.trials["value"].max()
    assert model.trials["user_attrs_best_iteration"][model.trials["value"] == best].iloc[0] == model.best_iteration


def test_fit_lightgbm_searches_on_a_stratified_sample_and_refits_the_choice_on_every_row(splits):
    X_train, y_train, X_valid, y_valid, _ = splits
    config = ModelConfig(n_trials=3, search_rows=1000, **FAST)
    model = fit_lightgbm(X_train, y_train, X_valid, y_valid, config)
    assert abs(model.search_rows - 1000) <= 1 and model.refitted and len(model.trials) == 3
    again = fit_lightgbm(X_train, y_train, X_valid, y_valid, config)  # the sample is seeded: same model
    assert again.booster.model_to_string() == model.booster.model_to_string()
    best = model.trials.loc[model.trials["value"].idxmax()]
    assert model.params["num_leaves"] == best["params_num_leaves"]  # the search's choice, refitted
    whole = fit_lightgbm(X_train, y_train, X_valid, y_valid, ModelConfig(n_trials=3, search_rows=None, **FAST))
    assert whole.search_rows == len(X_train) and not whole.refitted  # its best trial is kept as is


def test_fit_lightgbm_stops_searching_when_the_time_budget_is_spent(splits):
    X_train, y_train, X_valid, y_valid, _ = splits
    config = ModelConfig(n_trials=10_000, timeout_seconds=1.0, **FAST)
    model = fit_lightgbm(X_train, y_train, X_valid, y_valid, config)
    assert 1 <= len(model.trials) < 10_000
    assert model.hit_time_budget
    assert model.fit_seconds < 10  # the budget plus at most one (small) trial's overrun


def test_fit_lightgbm_cuts_a_single_long_fit_at_the_deadline_and_keeps_its_best_iteration(splits):
    X_train, y_train, X_valid, y_valid, _ = splits
    config = ModelConfig(tune=False, timeout_seconds=0.2, n_jobs=1, early_stopping_rounds=5000,
                         max_estimators=5000)
    model = fit_lightgbm(X_train, y_train, X_valid, y_valid, config)
    assert model.hit_time_budget
    assert 1 <= model.best_iteration < 5000
    assert model.fit_seconds < 5
    assert model.valid_auc > 0.6


def test_fit_lightgbm_refuses_validation_categories_that_differ_from_training(splits):
    X_train, y_train, _, y_valid, valid = splits
    X_valid_relearned, _ = prepare_matrix(valid[valid["plan"] != "team"], FEATURES)
    with pytest.raises(ValueError, match="categories"):
        fit_lightgbm(X_train, y_train, X_valid_relearned, y_valid[valid["plan"] != "team"], ModelConfig(**FAST))


def test_fit_lightgbm_needs_both_classes_in_each_split(splits):
    X_train, y_train, X_valid, _, _ = splits
    with pytest.raises(ValueError, match="both classes"):
        fit_lightgbm(X_train, y_train, X_valid, np.zeros(len(X_valid), dtype=int), ModelConfig(**FAST))


def test_feature_importance_ranks_the_informative_feature_first(splits):
    X_train, y_train, X_valid, y_valid, _ = splits
    model = fit_lightgbm(X_train, y_train, X_valid, y_valid, ModelConfig(tune=False, **FAST))
    table = feature_importance(model)
    assert list(table.columns) == ["feature", "gain", "split"]
    assert sorted(table["feature"]) == sorted(FEATURES)
    assert table["feature"].iloc[0] == "signal"
    assert table["gain"].is_monotonic_decreasing


def test_search_space_and_config_reject_nonsense():
    with pytest.raises(ValueError, match="learning_rate"):
        SearchSpace(learning_rate=(0.2, 0.01))
    with pytest.raises(ValueError, match="metric"):
        ModelConfig(metric="accuracy")
    with pytest.raises(ValueError, match="n_trials"):
        ModelConfig(n_trials=0)
    assert SearchSpace().contains(DEFAULT_PARAMS)


def test_the_fit_settings_default_to_the_training_configs_own_values():
    from dataclasses import fields

    from propensity.pipelines.training.config import ModelSection

    section, config = ModelSection(), ModelConfig()
    shared = [f.name for f in fields(ModelConfig) if f.name in ModelSection.model_fields]
    assert set(shared) == set(ModelSection.model_fields)
    assert {name: getattr(config, name) for name in shared} == section.model_dump()
    assert ModelConfig.from_section(ModelSection(n_trials=7), tune=False).n_trials == 7
