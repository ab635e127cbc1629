import json
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import brier_score_loss, roc_auc_score

from propensity.pipelines.training.calibration import PROBABILITY_FLOOR, ProbabilityCalibrator, ScoreMapper
from propensity.pipelines.training.metrics import expected_calibration_error


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p):
    return np.log(p) - np.log1p(-p)


def _overconfident(n, seed, base=-2.0):
    """True probabilities, outcomes, and raw scores twice as extreme in log-odds as the truth."""
    rng = np.random.default_rng(seed)
    p_true = _sigmoid(base + rng.normal(0, 1.2, n))
    y = (rng.uniform(size=n) < p_true).astype(int)
    return p_true, y, _sigmoid(2 * _logit(p_true))


def _linear_rate(s):
    return 0.02 + 0.19 * s  # 0.02 at rule score 0, 0.97 at 5


def _exact_rate_data(rows_per_score=1000):
    """Rule scores on a 0.01 grid with exactly round(rows * rate) positives at each score."""
    grid = np.round(np.arange(0, 501) / 100, 2)
    positives = np.round(rows_per_score * _linear_rate(grid)).astype(int)
    rule = np.repeat(grid, rows_per_score)
    y = np.concatenate([np.r_[np.ones(k), np.zeros(rows_per_score - k)] for k in positives]).astype(int)
    return rule, y


def _noisy_rule_data(n, seed):
    rng = np.random.default_rng(seed)
    rule = np.where(rng.uniform(size=n) < 0.3, 0.0, rng.uniform(0, 5, n))
    p_true = _sigmoid(-3.5 + 0.9 * rule + rng.normal(0, 0.7, n))
    y = (rng.uniform(size=n) < p_true).astype(int)
    return rule, p_true, y


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibrator_improves_brier_and_ece_of_overconfident_scores_on_fresh_data(method):
    _, y_valid, raw_valid = _overconfident(20000, seed=0)
    _, y_test, raw_test = _overconfident(20000, seed=1)
    calibrated = ProbabilityCalibrator(method=method).fit(raw_valid, y_valid).transform(raw_test)
    assert brier_score_loss(y_test, calibrated) < brier_score_loss(y_test, raw_test) - 0.003
    assert expected_calibration_error(y_test, calibrated) < 0.02
    assert expected_calibration_error(y_test, raw_test) > 0.04


def test_platt_keeps_the_raw_order_and_isotonic_loses_at_most_a_little_auc_to_ties():
    _, y_valid, raw_valid = _overconfident(5000, seed=0)
    _, y_test, raw_test = _overconfident(5000, seed=1)
    platt = ProbabilityCalibrator(method="platt").fit(raw_valid, y_valid).transform(raw_test)
    isotonic = ProbabilityCalibrator(method="isotonic").fit(raw_valid, y_valid).transform(raw_test)
    assert roc_auc_score(y_test, platt) == pytest.approx(roc_auc_score(y_test, raw_test))
    assert roc_auc_score(y_test, isotonic) > roc_auc_score(y_test, raw_test) - 0.01


def test_centred_isotonic_keeps_distinct_raw_values_apart_between_its_first_and_last_step():
    from sklearn.isotonic import IsotonicRegression

    _, y_valid, raw_valid = _overconfident(5000, seed=0)
    _, y_test, raw_test = _overconfident(5000, seed=1)
    calibrator = ProbabilityCalibrator(method="isotonic").fit(raw_valid, y_valid)
    low, high = calibrator.knots_[0][[0, -1]]
    inside = np.sort(np.unique(raw_test[(raw_test > low) & (raw_test < high)]))
    assert (np.diff(calibrator.transform(inside)) > 0).all()  # no ties: the ranking survives
    steps = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw_valid, y_valid).predict(raw_test)
    centred = calibrator.transform(raw_test)
    assert roc_auc_score(y_test, centred) >= roc_auc_score(y_test, steps)
    assert expected_calibration_error(y_test, centred) < 0.02


def test_auto_picks_platt_for_few_positives_and_isotonic_for_many():
    _, y, raw = _overconfident(20000, seed=2)
    few = ProbabilityCalibrator().fit(raw[:500], y[:500])
    many = ProbabilityCalibrator().fit(raw, y)
    assert few.n_positives_ < 200 and few.method_ == "platt"
    assert many.n_positives_ >= 200 and many.method_ == "isotonic"
    assert ProbabilityCalibrator(min_isotonic_positives=10).fit(raw[:500], y[:500]).method_ == "isotonic"


def test_calibrated_probabilities_stay_strictly_inside_zero_one():
    raw = np.linspace(0, 1, 200)
    y = (raw > 0.5).astype(int)  # perfectly separated: isotonic would say exactly 0 and 1
    for method in ("isotonic", "platt"):
        calibrated = ProbabilityCalibrator(method=method).fit(raw, y).transform([0.0, 0.01, 0.99, 1.0])
        assert calibrated.min() >= PROBABILITY_FLOOR and calibrated.max() <= 1 - PROBABILITY_FLOOR
    isotonic = ProbabilityCalibrator(method="isotonic").fit(raw, y)
    assert isotonic.transform([0.0, 1.0]).tolist() == [PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR]


def test_calibrator_follows_the_estimator_contract():
    calibrator = ProbabilityCalibrator(method="platt", min_isotonic_positives=50)
    assert not hasattr(calibrator, "method_")
    assert clone(calibrator).get_params() == {"method": "platt", "min_isotonic_positives": 50}
    with pytest.raises(NotFittedError):
        calibrator.transform([0.5])
    _, y, raw = _overconfident(1000, seed=3)
    assert calibrator.fit(raw, y) is calibrator
    assert calibrator.fit_transform(raw, y).shape == (1000,)


def test_calibrator_refuses_one_class_unknown_methods_and_probabilities_outside_zero_one():
    with pytest.raises(ValueError, match="one class"):
        ProbabilityCalibrator().fit([0.1, 0.2, 0.3], [0, 0, 0])
    with pytest.raises(ValueError, match="method"):
        ProbabilityCalibrator(method="beta").fit([0.1, 0.2], [0, 1])
    with pytest.raises(ValueError, match="outside"):
        ProbabilityCalibrator().fit([0.1, 1.5], [0, 1])


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_a_pickled_calibrator_gives_the_same_probabilities(method):
    _, y, raw = _overconfident(3000, seed=4)
    calibrator = ProbabilityCalibrator(method=method).fit(raw, y)
    restored = pickle.loads(pickle.dumps(calibrator))
    np.testing.assert_array_equal(restored.transform(raw), calibrator.transform(raw))


def test_rate_matching_recovers_the_rule_score_when_the_probability_is_the_rule_rate():
    rule, y = _exact_rate_data()
    mapper = ScoreMapper().fit(_linear_rate(rule), y, rule)
    s = np.random.default_rng(0).uniform(0, 5, 1000)
    np.testing.assert_allclose(mapper.transform(_linear_rate(s)), s, atol=0.01)  # one grid step


def test_rate_matching_roughly_recovers_the_rule_score_from_noisy_outcomes():
    rng = np.random.default_rng(5)
    rule = rng.uniform(0, 5, 20000)
    rate = _sigmoid(-3 + 1.0 * rule)
    y = (rng.uniform(size=rule.size) < rate).astype(int)
    mapper = ScoreMapper().fit(rate, y, rule)
    s = np.linspace(0.5, 4.5, 41)
    assert np.abs(mapper.transform(_sigmoid(-3 + 1.0 * s)) - s).mean() < 0.15


def test_rate_matching_maps_a_flat_stretch_of_the_rule_curve_to_its_middle():
    # rates 0.1 at score 0, 0.3 at scores 1, 2 and 3, 0.5 at 4, 0.7 at 5 (exact, 10 rows each)
    rule = np.repeat([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], 10)
    y = np.concatenate([np.r_[np.ones(k), np.zeros(10 - k)] for k in (1, 3, 3, 3, 5, 7)]).astype(int)
    mapper = ScoreMapper().fit(np.full(rule.size, 0.3), y, rule)
    np.testing.assert_allclose(mapper.transform([0.2, 0.3, 0.4, 0.6]), [0.5, 2.0, 3.5, 4.5], atol=1e-9)


def test_rate_matching_sends_probabilities_beyond_the_rule_rates_to_the_ends_of_the_scale():
    rule, y = _exact_rate_data(rows_per_score=200)
    mapper = ScoreMapper().fit(_linear_rate(rule), y, rule)
    assert mapper.transform([0.0, 0.01, 0.98, 1.0]).tolist() == [0.0, 0.0, 5.0, 5.0]
    assert mapper.rule_rate_[0] == pytest.approx(0.02) and mapper.rule_rate_[-1] == pytest.approx(0.97)


@pytest.mark.parametrize("method", ["rate_matching", "quantile"])
def test_mapped_scores_are_monotone_in_the_probability_and_stay_in_zero_to_five(method):
    rule, p_true, y = _noisy_rule_data(3000, seed=6)
    mapper = ScoreMapper(method=method).fit(p_true, y, rule)
    scores = mapper.transform(np.linspace(0, 1, 5001))
    assert np.all(np.diff(scores) >= 0)
    assert scores.min() >= 0 and scores.max() <= 5


def test_rate_matching_refuses_a_rule_score_without_signal_and_suggests_quantile():
    rng = np.random.default_rng(7)
    p = rng.uniform(size=100)
    y = (rng.uniform(size=100) < 0.2).astype(int)
    with pytest.raises(ValueError, match='method="quantile"'):
        ScoreMapper().fit(p, y, np.full(100, 2.5))
    with pytest.raises(ValueError, match="no signal"):
        ScoreMapper().fit(p, np.zeros(100, dtype=int), rng.uniform(0, 5, 100))
    assert ScoreMapper(method="quantile").fit(p, None, rng.uniform(0, 5, 100)).transform([0.5]).shape == (1,)


def _band_shares(scores):
    return np.array([(scores >= 2.0).mean(), (scores >= 3.5).mean()])


def test_quantile_matching_reproduces_the_rule_band_sizes_on_the_fitting_data():
    rule, p_true, y = _noisy_rule_data(400, seed=8)
    mapper = ScoreMapper(method="quantile").fit(p_true, y, rule)
    np.testing.assert_allclose(_band_shares(mapper.transform(p_true)), _band_shares(rule), atol=1 / 400)


def test_quantile_matching_with_more_rows_than_grid_points_matches_band_sizes_within_the_grid_step():
    rule, p_true, y = _noisy_rule_data(20000, seed=9)
    mapper = ScoreMapper(method="quantile", n_grid=501).fit(p_true, y, rule)
    np.testing.assert_allclose(_band_shares(mapper.transform(p_true)), _band_shares(rule), atol=1 / 500 + 1 / 20000)


def test_quantile_matching_maps_tied_probabilities_to_one_score():
    rule = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    p = np.array([0.1, 0.2, 0.2, 0.2, 0.5, 0.9])
    mapper = ScoreMapper(method="quantile").fit(p, None, rule)
    assert mapper.transform(p).tolist() == [0.0, 2.0, 2.0, 2.0, 4.0, 5.0]
    assert mapper.transform([0.0, 1.0]).tolist() == [0.0, 5.0]


@pytest.mark.parametrize("method", ["rate_matching", "quantile"])
def test_a_mapper_saved_as_json_and_loaded_back_gives_identical_scores(method):
    rule, p_true, y = _noisy_rule_data(3000, seed=10)
    mapper = ScoreMapper(method=method).fit(p_true, y, rule)
    restored = ScoreMapper.from_dict(json.loads(json.dumps(mapper.to_dict())))
    probe = np.random.default_rng(0).uniform(size=2000)
    np.testing.assert_array_equal(restored.transform(probe), mapper.transform(probe))
    assert restored.get_params() == mapper.get_params()


def test_loading_a_mapper_from_a_dict_with_missing_keys_fails_clearly():
    rule, p_true, y = _noisy_rule_data(500, seed=11)
    data = ScoreMapper().fit(p_true, y, rule).to_dict()
    del data["score_grid"]
    with pytest.raises(ValueError, match="keys"):
        ScoreMapper.from_dict(data)


@pytest.mark.parametrize("method", ["rate_matching", "quantile"])
def test_a_pickled_mapper_gives_the_same_scores(method):
    rule, p_true, y = _noisy_rule_data(2000, seed=12)
    mapper = ScoreMapper(method=method).fit(p_true, y, rule)
    restored = pickle.loads(pickle.dumps(mapper))
    np.testing.assert_array_equal(restored.transform(p_true), mapper.transform(p_true))


def test_mapper_transform_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError):
        ScoreMapper().transform([0.5])
