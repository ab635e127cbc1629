"""The paired bootstrap: same draws as training's bootstrap_ci, same numbers as scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from propensity.pipelines.training.bootstrap import interval, paired_bootstrap
from propensity.pipelines.training.metrics import resample_indices
from propensity.pipelines.training.metrics import bootstrap_ci


def _frame(n=400, seed=1):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    tied = np.round(rng.random(n) + 0.3 * y, 1)  # heavy ties, like a banded 0-5 score
    smooth = rng.random(n) + 0.6 * y
    return y, tied, smooth


def test_the_roc_auc_interval_equals_training_bootstrap_ci_for_the_same_seed():
    y, tied, _ = _frame()
    stats = paired_bootstrap(y, {"a": tied}, n_boot=120, seed=7)
    assert interval(stats["a"].roc_auc) == pytest.approx(bootstrap_ci(y, tied, n_boot=120, seed=7), abs=1e-12)


def test_every_resample_matches_scikit_learn_on_the_same_rows():
    y, tied, smooth = _frame()
    stats = paired_bootstrap(y, {"tied": tied, "smooth": smooth}, n_boot=40, seed=3)
    draws = np.concatenate(list(resample_indices(y.size, 40, 3)))
    for b, rows in enumerate(draws):
        assert stats["tied"].pr_auc[b] == pytest.approx(average_precision_score(y[rows], tied[rows]), abs=1e-12)
        assert stats["smooth"].roc_auc[b] == pytest.approx(roc_auc_score(y[rows], smooth[rows]), abs=1e-12)


def test_a_resample_with_one_class_is_nan_and_left_out_of_the_interval():
    y = np.array([1] + [0] * 9)
    stats = paired_bootstrap(y, {"a": np.arange(10.0)}, n_boot=200, seed=0)
    single = np.isnan(stats["a"].roc_auc)
    assert single.any() and not single.all()
    low, high = interval(stats["a"].roc_auc)
    assert 0 <= low <= high <= 1


def test_bad_input_is_refused_with_the_model_named():
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="score 'x' holds NaN"):
        paired_bootstrap(y, {"x": np.array([0.1, np.nan, 0.2, 0.3])}, n_boot=5)
    with pytest.raises(ValueError, match="0/1"):
        paired_bootstrap(np.array([0, 2, 0, 1]), {"x": np.arange(4.0)}, n_boot=5)
