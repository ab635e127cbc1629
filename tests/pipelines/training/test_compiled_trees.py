"""Compiled trees (extra [fast]) predict what LightGBM predicts, categoricals and NaNs included."""

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from pipelines.training.compiled import compiled_predictor, compiled_trees_requested
from pipelines.training.model import model_array

pytest.importorskip("lleaves", reason="the [fast] extra (lleaves) is not installed")


def _booster(rng: np.random.Generator) -> tuple[lgb.Booster, pd.DataFrame, dict]:
    n = 4_000
    frame = pd.DataFrame({
        "clicks": rng.poisson(3, n).astype("float64"),
        "recency": np.where(rng.random(n) < 0.2, np.nan, rng.exponential(10, n)),
        "plan": pd.Categorical(rng.choice(["free", "pro", "team"], n)),
    })
    logit = 0.4 * frame["clicks"] - 0.05 * frame["recency"].fillna(30) + (frame["plan"] == "team") * 1.0 - 2
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 8, "seed": 0},
                        lgb.Dataset(frame, label, categorical_feature=["plan"]), num_boost_round=60)
    return booster, frame, {"plan": list(frame["plan"].cat.categories)}


def test_compiled_trees_equal_lightgbm_on_the_model_array(tmp_path):
    rng = np.random.default_rng(0)
    booster, frame, categories = _booster(rng)
    scoring = frame.assign(plan=frame["plan"].astype(object))
    scoring.loc[::97, "plan"] = "enterprise"  # unseen category -> NaN code, as in training's rules
    matrix = model_array(scoring, ["clicks", "recency", "plan"], categories)
    expected = booster.predict(matrix, num_iteration=40)
    predict = compiled_predictor(booster, 40, cache_dir=tmp_path)
    np.testing.assert_allclose(predict(matrix), expected, rtol=0, atol=1e-12)
    # the full model differs from the first 40 trees: the iteration limit is really applied
    assert np.abs(compiled_predictor(booster, None, cache_dir=tmp_path)(matrix) - expected).max() > 1e-6


def test_only_an_explicit_yes_turns_compiled_trees_on():
    assert compiled_trees_requested({"PROPENSITY_COMPILED_TREES": "1"})
    assert compiled_trees_requested({"PROPENSITY_COMPILED_TREES": "true"})
    assert not compiled_trees_requested({"PROPENSITY_COMPILED_TREES": "0"})
    assert not compiled_trees_requested({})


def test_a_scorer_with_compiled_trees_scores_the_same_and_still_pickles(tmp_path):
    import pickle

    from pipelines.training.scorer import LearnedScorer

    rng = np.random.default_rng(1)
    booster, frame, categories = _booster(rng)
    scorer = LearnedScorer(booster=booster, feature_names=["clicks", "recency", "plan"], categories=categories,
                           calibrator=None, mapper=None, best_iteration=60)
    plain = scorer.raw_probability(frame)
    scorer.compile_trees(cache_dir=tmp_path)
    np.testing.assert_allclose(scorer.raw_probability(frame), plain, rtol=0, atol=1e-12)
    restored = pickle.loads(pickle.dumps(scorer))  # the MLflow pyfunc pickles the scorer
    assert restored._compiled is None
    np.testing.assert_allclose(restored.raw_probability(frame), plain, rtol=0, atol=1e-12)
