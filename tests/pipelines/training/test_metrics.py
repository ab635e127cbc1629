import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from propensity.pipelines.training.metrics import (
    bootstrap_ci,
    classification_metrics,
    expected_calibration_error,
    lift_at,
    lift_key,
    precision_recall_at,
)


def _synthetic(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.01, 0.99, n)
    y = (rng.uniform(size=n) < p).astype(int)
    return y, p


def test_ece_on_four_points_matches_the_hand_computed_value():
    # bins (10 uniform): 0.1 and 0.2 -> bins 0 and 1 (0.1 sits on an edge and goes in the lower
    # bin); 0.85 and 0.95 -> bins 8 and 9. Gaps: |0-0.1| + |0-0.2| + |1-0.85| + |1-0.95| = 0.5
    y = [0, 0, 1, 1]
    p = [0.1, 0.2, 0.85, 0.95]
    assert expected_calibration_error(y, p) == pytest.approx(0.5 / 4)


def test_ece_weights_each_bin_by_its_rows():
    # one bin holding 0.3, 0.3, 0.3 with outcomes 1, 0, 0 (gap 1/3 - 0.3) and one row 0.9 -> 1
    y = [1, 0, 0, 1]
    p = [0.3, 0.3, 0.3, 0.9]
    expected = (3 * abs(1 / 3 - 0.3) + 1 * abs(1 - 0.9)) / 4
    assert expected_calibration_error(y, p) == pytest.approx(expected)


def test_ece_puts_probability_one_in_the_last_bin():
    assert expected_calibration_error([1, 1], [1.0, 1.0], n_bins=10) == 0.0
    assert expected_calibration_error([0], [1.0], n_bins=1) == 1.0


def test_ece_is_the_weighted_gap_of_sklearns_calibration_curve():
    y, p = _synthetic()
    for strategy in ("uniform", "quantile"):
        prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy=strategy)
        edges = np.linspace(0, 1, 11) if strategy == "uniform" else np.quantile(p, np.linspace(0, 1, 11))
        counts = np.histogram(p, edges)[0]  # same bins as long as no p sits exactly on an edge
        expected = (np.abs(prob_true - prob_pred) * counts[counts > 0]).sum() / len(p)
        assert expected_calibration_error(y, p, strategy=strategy) == pytest.approx(expected)


def test_ece_of_a_well_calibrated_model_is_small_and_of_a_shifted_one_is_large():
    y, p = _synthetic(n=20000)
    assert expected_calibration_error(y, p) < 0.02
    assert expected_calibration_error(y, np.clip(p + 0.2, 0, 1)) > 0.15


def test_ece_rejects_probabilities_outside_zero_one_and_unknown_strategies():
    with pytest.raises(ValueError, match="outside"):
        expected_calibration_error([0, 1], [0.2, 1.2])
    with pytest.raises(ValueError, match="strategy"):
        expected_calibration_error([0, 1], [0.2, 0.8], strategy="kmeans")


def test_lift_at_the_top_fifth_has_the_known_answer():
    # 10 rows, 2 positives (base rate 0.2); top 2 by score hold 1 positive: rate 0.5 -> lift 2.5
    y = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    score = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert lift_at(y, score, fraction=0.2) == pytest.approx(2.5)


def test_lift_counts_rows_tied_at_the_cut_at_their_mean_rate_whatever_the_row_order():
    # top 3 of 6: one row scores 5 (positive); three rows tie at 3 with one positive among them,
    # so two of the three tied rows fit and count at rate 1/3: precision (1 + 2/3) / 3
    y = np.array([1, 0, 1, 0, 0, 0])
    score = np.array([5, 3, 3, 3, 1, 0])
    expected_precision = (1 + 2 / 3) / 3
    for order in (np.arange(6), np.array([5, 3, 1, 0, 2, 4])):
        precision, recall = precision_recall_at(y[order], score[order], 0.5)
        assert precision == pytest.approx(expected_precision)
        assert recall == pytest.approx((1 + 2 / 3) / 2)
        assert lift_at(y[order], score[order], 0.5) == pytest.approx(expected_precision / (2 / 6))


def test_lift_takes_at_least_one_row_and_rounds_the_top_up():
    y = [1, 0, 0, 0, 0]
    assert lift_at(y, [5, 4, 3, 2, 1], fraction=0.01) == pytest.approx(5.0)
    # 0.3 * 10 is 3 rows despite floating point
    y10 = [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert precision_recall_at(y10, list(range(10, 0, -1)), 0.3) == (1.0, 1.0)


def test_lift_is_nan_without_positives_and_recall_too():
    assert math.isnan(lift_at([0, 0, 0], [0.3, 0.2, 0.1]))
    precision, recall = precision_recall_at([0, 0, 0], [0.3, 0.2, 0.1], 0.5)
    assert precision == 0.0 and math.isnan(recall)


def test_lift_of_the_whole_list_is_one():
    y, p = _synthetic(n=500)
    assert lift_at(y, p, fraction=1.0) == pytest.approx(1.0)


def test_classification_metrics_agree_with_sklearn_and_name_the_lift_by_its_fraction():
    y, p = _synthetic()
    metrics = classification_metrics(y, p)
    assert set(metrics) == {"roc_auc", "pr_auc", "brier", "ece", "lift_top10", "n", "positives", "base_rate"}
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert metrics["pr_auc"] == pytest.approx(average_precision_score(y, p))
    assert metrics["brier"] == pytest.approx(brier_score_loss(y, p))
    assert metrics["ece"] == pytest.approx(expected_calibration_error(y, p))
    assert metrics["lift_top10"] == pytest.approx(lift_at(y, p, 0.1))
    assert (metrics["n"], metrics["positives"]) == (len(y), int(y.sum()))
    assert metrics["base_rate"] == pytest.approx(y.mean())
    assert "lift_top5" in classification_metrics(y, p, top_fraction=0.05)
    assert lift_key(0.29) == "lift_top29" and lift_key(0.025) == "lift_top2.5"


def test_classification_metrics_rank_by_the_given_score_for_lift():
    y, p = _synthetic()
    score = np.round(p * 5)  # a coarse 0-5 score with heavy ties
    metrics = classification_metrics(y, p, score=score)
    assert metrics["lift_top10"] == pytest.approx(lift_at(y, score, 0.1))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, p))


def test_classification_metrics_with_one_class_give_nan_aucs_instead_of_raising():
    metrics = classification_metrics([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4])
    assert math.isnan(metrics["roc_auc"]) and math.isnan(metrics["pr_auc"])
    assert math.isnan(metrics["lift_top10"])
    assert metrics["brier"] == pytest.approx(np.mean(np.square([0.1, 0.2, 0.3, 0.4])))
    assert metrics["positives"] == 0 and metrics["base_rate"] == 0.0
    all_positive = classification_metrics([1, 1], [0.9, 0.8])
    assert math.isnan(all_positive["roc_auc"]) and all_positive["lift_top10"] == pytest.approx(1.0)


def test_bootstrap_auc_fast_path_equals_calling_roc_auc_score_per_resample():
    y, p = _synthetic(n=300, seed=3)
    score = np.round(p, 1)  # ties exercise the half-credit rule
    fast = bootstrap_ci(y, score, n_boot=80, seed=7)
    slow = bootstrap_ci(y, score, metric=lambda a, b: roc_auc_score(a, b), n_boot=80, seed=7)
    assert fast == pytest.approx(slow, abs=1e-12)


def test_bootstrap_ci_brackets_the_auc_is_seeded_and_narrows_with_more_rows():
    y, p = _synthetic(n=1000)
    low, high = bootstrap_ci(y, p, n_boot=500)
    assert low < roc_auc_score(y, p) < high
    assert bootstrap_ci(y, p, n_boot=500) == (low, high)
    y_big, p_big = _synthetic(n=10000, seed=1)
    low_big, high_big = bootstrap_ci(y_big, p_big, n_boot=500)
    assert high_big - low_big < high - low


def test_bootstrap_ci_resamples_the_columns_of_a_two_dimensional_score_together():
    y, p = _synthetic(n=500)
    rng = np.random.default_rng(1)
    noisy = p + rng.normal(0, 0.3, len(p))
    paired = np.column_stack([p, noisy])

    def auc_gain(labels, scores):
        return roc_auc_score(labels, scores[:, 0]) - roc_auc_score(labels, scores[:, 1])

    low, high = bootstrap_ci(y, paired, metric=auc_gain, n_boot=60)
    assert 0 < low < auc_gain(y, paired) < high


def test_bootstrap_ci_is_nan_when_y_has_one_class():
    low, high = bootstrap_ci([0, 0, 0], [0.1, 0.2, 0.3], n_boot=20)
    assert math.isnan(low) and math.isnan(high)
