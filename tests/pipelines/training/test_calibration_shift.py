"""The prior-shift adjustment: a new period's share of positives found without labels, and the
posteriors moved to it (Saerens et al. 2002)."""

import numpy as np
import pytest

from propensity.pipelines.training.calibration_shift import prior_shift_adjusted
from propensity.pipelines.training.metrics import expected_calibration_error


def _posterior(score: np.ndarray, prior: float) -> np.ndarray:
    # scores are N(1, 1) for positives and N(-1, 1) for negatives: the likelihood ratio is exp(2 s)
    odds = np.exp(2 * score) * prior / (1 - prior)
    return odds / (1 + odds)


@pytest.mark.parametrize("new_prior", [0.3, 0.5, 0.7])
def test_the_new_prior_is_found_and_the_posteriors_are_those_at_that_prior(new_prior):
    rng = np.random.default_rng(3)
    y = rng.random(40_000) < new_prior
    score = np.where(y, rng.normal(1, 1, y.size), rng.normal(-1, 1, y.size))
    calibrated_at_train = _posterior(score, 0.5)  # fitted on a period with half positives
    adjusted, prior = prior_shift_adjusted(calibrated_at_train, 0.5)
    assert prior == pytest.approx(new_prior, abs=0.01)
    np.testing.assert_allclose(adjusted, _posterior(score, new_prior), atol=0.01)
    if new_prior != 0.5:
        assert expected_calibration_error(y, adjusted) < expected_calibration_error(y, calibrated_at_train) / 2
    assert np.array_equal(np.argsort(adjusted, kind="stable"), np.argsort(calibrated_at_train, kind="stable"))


def test_no_shift_leaves_the_probabilities_where_they_are():
    rng = np.random.default_rng(4)
    y = rng.random(40_000) < 0.4
    score = np.where(y, rng.normal(1, 1, y.size), rng.normal(-1, 1, y.size))
    p = _posterior(score, 0.4)
    adjusted, prior = prior_shift_adjusted(p, 0.4)
    assert prior == pytest.approx(0.4, abs=0.01)
    np.testing.assert_allclose(adjusted, p, atol=0.01)
    with pytest.raises(ValueError, match="train_prior"):
        prior_shift_adjusted(p, 1.0)


def test_the_accounts_where_the_calibration_misses_most_are_named_with_their_share():
    import pandas as pd

    from propensity.pipelines.training.calibration_shift import largest_gaps_by_account

    # a: calibrated (rate 0.5, p 0.5); b: under-predicted by 0.3 on 200 rows; tiny: too few rows to count
    rows = ([("a", 1, 0.5), ("a", 0, 0.5)] * 100 + [("b", 1, 0.5)] * 160 + [("b", 0, 0.5)] * 40
            + [("tiny", 1, 0.0)] * 49 + [("tiny", 0, 0.0)] * 1)  # 450 rows in all
    test = pd.DataFrame(rows, columns=["account_id", "label", "probability"])
    gaps = largest_gaps_by_account(test)
    assert [g["account_id"] for g in gaps] == ["b", "a"]
    assert gaps[0]["rows"] == 200 and abs(gaps[0]["rate"] - 0.8) < 1e-12
    assert abs(gaps[0]["share_of_gap"] - 200 * 0.3 / 450) < 1e-12
    assert gaps[1]["share_of_gap"] == 0.0
    assert largest_gaps_by_account(test.drop(columns="account_id")) == []
