"""Compiled trees (extra [fast]) predict what LightGBM predicts (to ~1e-15: only the summation order
of the tree blocks differs), categoricals and NaNs included."""

import os
import pickle

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from propensity.pipelines.training.compiled import compiled_predictor, compiled_trees_requested
from propensity.pipelines.training.model import model_array
from propensity.pipelines.training.scorer import LearnedScorer

pytest.importorskip("tl2cgen", reason="the [fast] extra (treelite, tl2cgen) is not installed")


def _booster(rng: np.random.Generator, rounds: int = 60) -> tuple[lgb.Booster, pd.DataFrame, dict]:
    n = 4_000
    frame = pd.DataFrame({
        "clicks": rng.poisson(3, n).astype("float64"),
        "recency": np.where(rng.random(n) < 0.2, np.nan, rng.exponential(10, n)),
        "spend": rng.normal(0, 50, n),  # negative values too
        "plan": pd.Categorical(rng.choice(["free", "pro", "team", "edu", "gov"], n)),
    })
    logit = (0.4 * frame["clicks"] - 0.05 * frame["recency"].fillna(30) + 0.01 * frame["spend"]
             + frame["plan"].isin(["team", "gov"]) * 1.0 - 2)
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_leaves": 8, "seed": 0, "max_cat_to_onehot": 2,
              "min_data_per_group": 5, "cat_smooth": 1}
    booster = lgb.train(params, lgb.Dataset(frame, label, categorical_feature=["plan"]), num_boost_round=rounds)
    return booster, frame, {"plan": list(frame["plan"].cat.categories)}


def _scoring_frame(frame: pd.DataFrame) -> pd.DataFrame:
    scoring = frame.assign(plan=frame["plan"].astype(object))
    scoring.loc[::97, "plan"] = "enterprise"  # unseen category -> NaN code, as in training
    scoring.loc[::89, "plan"] = None
    return scoring


def test_compiled_trees_equal_lightgbm_on_the_model_array(tmp_path):
    booster, frame, categories = _booster(np.random.default_rng(0))
    names = ["clicks", "recency", "spend", "plan"]
    matrix = model_array(_scoring_frame(frame), names, categories)
    assert np.isnan(matrix).any(), "the check must include missing values"
    expected = booster.predict(matrix, num_iteration=40)
    predict = compiled_predictor(booster, 40, cache_dir=tmp_path, trees_per_block=15)  # blocks of 15, 15, 10
    assert len(list(tmp_path.glob("trees-*"))) == 3
    np.testing.assert_allclose(predict(matrix), expected, rtol=0, atol=1e-14)
    # the full model differs from the first 40 trees: the iteration limit is really applied
    full = compiled_predictor(booster, None, cache_dir=tmp_path)(matrix)
    assert np.abs(full - expected).max() > 1e-6
    np.testing.assert_allclose(full, booster.predict(matrix), rtol=0, atol=1e-14)


def test_rows_beyond_one_chunk_and_a_single_row_score_the_same(tmp_path, monkeypatch):
    import propensity.pipelines.training.compiled as compiled

    booster, frame, categories = _booster(np.random.default_rng(2), rounds=30)
    matrix = model_array(frame, ["clicks", "recency", "spend", "plan"], categories)
    monkeypatch.setattr(compiled, "_CHUNK_ROWS", 1_000)  # 4,000 rows -> four calls into the library
    predict = compiled_predictor(booster, None, cache_dir=tmp_path)
    np.testing.assert_allclose(predict(matrix), booster.predict(matrix), rtol=0, atol=1e-14)
    np.testing.assert_allclose(predict(matrix[:1]), booster.predict(matrix[:1]), rtol=0, atol=1e-14)
    assert predict(matrix[:0]).shape == (0,)


def test_the_compiled_library_is_cached_by_model_and_reused(tmp_path):
    booster, frame, categories = _booster(np.random.default_rng(3), rounds=20)
    compiled_predictor(booster, None, cache_dir=tmp_path)
    libraries = list(tmp_path.glob("trees-*"))
    assert len(libraries) == 1
    stamp = libraries[0].stat().st_mtime_ns
    compiled_predictor(booster, None, cache_dir=tmp_path)  # same model: no new compile
    assert libraries[0].stat().st_mtime_ns == stamp
    compiled_predictor(booster, 10, cache_dir=tmp_path)  # fewer trees: another model, another library
    assert len(list(tmp_path.glob("trees-*"))) == 2
    assert not [p for p in tmp_path.iterdir() if p.is_dir()], "no half-written build folder is left behind"


def test_a_model_that_is_not_a_binary_classifier_is_refused(tmp_path):
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"x": rng.normal(size=500)})
    regressor = lgb.train({"objective": "regression", "verbose": -1}, lgb.Dataset(frame, frame["x"] * 2),
                          num_boost_round=5)
    with pytest.raises(ValueError, match="binary LightGBM models only.*regression"):
        compiled_predictor(regressor, None, cache_dir=tmp_path)


def test_a_missing_compiler_is_named(tmp_path, monkeypatch):
    booster, _, _ = _booster(np.random.default_rng(4), rounds=5)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match="gcc"):
        compiled_predictor(booster, None, cache_dir=tmp_path)


def test_only_an_explicit_yes_turns_compiled_trees_on():
    assert compiled_trees_requested({"PROPENSITY_COMPILED_TREES": "1"})
    assert compiled_trees_requested({"PROPENSITY_COMPILED_TREES": "true"})
    assert not compiled_trees_requested({"PROPENSITY_COMPILED_TREES": "0"})
    assert not compiled_trees_requested({})


def test_a_scorer_with_compiled_trees_scores_the_same_and_still_pickles(tmp_path):
    booster, frame, categories = _booster(np.random.default_rng(1))
    scorer = LearnedScorer(booster=booster, feature_names=["clicks", "recency", "spend", "plan"],
                           categories=categories, calibrator=None, mapper=None, best_iteration=60)
    plain = scorer.raw_probability(frame)
    scorer.compile_trees(cache_dir=tmp_path)
    assert scorer.uses_compiled_trees
    np.testing.assert_allclose(scorer.raw_probability(frame), plain, rtol=0, atol=1e-14)
    # the MLflow pyfunc pickles the scorer, and Spark ships it to its workers that way: the copy
    # holds no native handle but compiles (or finds the cached libraries) when it first scores
    restored = pickle.loads(pickle.dumps(scorer))
    assert not restored.uses_compiled_trees
    np.testing.assert_allclose(restored.raw_probability(frame), plain, rtol=0, atol=1e-14)
    assert restored.uses_compiled_trees
    assert "PROPENSITY_COMPILED_TREES" not in os.environ
