"""Negative down-sampling keeps probabilities calibrated when (and only when) it is corrected."""

import numpy as np
import pandas as pd
import pytest

from propensity.pipelines.training.model import ModelConfig, fit_lightgbm
from propensity.pipelines.training.sampling import prior_correction, sample_negatives

RATE = 0.1


def _rows(n: int, seed: int, split: str) -> pd.DataFrame:
    """Rows with a known probability: base rate about 4%, two informative features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    p = 1 / (1 + np.exp(-(-3.8 + 1.1 * x[:, 0] + 0.7 * x[:, 1])))
    return pd.DataFrame({
        "contact_id": [f"{split}-{i}" for i in range(n)],
        "as_of": pd.Timestamp("2025-01-01"),
        "split": split,
        "label": (rng.random(n) < p).astype(int),
        "x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2],
        "true_p": p,
    })


def _ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    edges = np.quantile(p, np.linspace(0, 1, bins + 1))
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    return float(sum(abs(y[idx == b].mean() - p[idx == b].mean()) * (idx == b).mean()
                     for b in range(bins) if (idx == b).any()))


def test_sample_negatives_keeps_positives_and_other_splits_and_weights_kept_negatives():
    frame = pd.concat([_rows(20_000, 0, "train"), _rows(2_000, 1, "valid")], ignore_index=True)
    out = sample_negatives(frame, 0.25, seed=3)
    train, valid = out[out["split"] == "train"], out[out["split"] == "valid"]
    before = frame[frame["split"] == "train"]
    assert train["label"].sum() == before["label"].sum()            # every positive kept
    assert len(valid) == 2_000 and (valid["weight"] == 1).all()      # other splits untouched
    assert set(train.loc[train["label"] == 0, "weight"]) == {4.0}
    kept = (train["label"] == 0).sum() / (before["label"] == 0).sum()
    assert 0.23 < kept < 0.27
    # the weights estimate the original size; the choice is deterministic and order-free
    assert abs(train["weight"].sum() - len(before)) / len(before) < 0.03
    shuffled = sample_negatives(frame.sample(frac=1, random_state=1), 0.25, seed=3)
    assert set(shuffled["contact_id"]) == set(out["contact_id"])
    assert sample_negatives(frame, 1.0, seed=3).shape[0] == len(frame)
    with pytest.raises(ValueError, match="negative_sample_rate"):
        sample_negatives(frame, 0.0)


@pytest.mark.slow
def test_weighted_model_on_sampled_negatives_stays_calibrated_and_unweighted_does_not():
    train = sample_negatives(_rows(60_000, 0, "train"), RATE, seed=0)
    valid, test = _rows(20_000, 1, "valid"), _rows(60_000, 2, "test")
    features = ["x0", "x1", "x2"]
    config = ModelConfig(tune=False, max_estimators=300, early_stopping_rounds=30, n_jobs=1)

    def fit(weights):
        return fit_lightgbm(train[features], train["label"], valid[features], valid["label"], config,
                            weight_train=weights)

    observed = test["label"].mean()
    corrected = fit(train["weight"]).predict_raw(test[features])
    naive_model = fit(None)
    naive = naive_model.predict_raw(test[features])
    y = test["label"].to_numpy()
    # corrected by weights: the mean prediction matches the observed rate, the bins too
    assert abs(corrected.mean() - observed) / observed < 0.15
    assert _ece(y, corrected) < 0.01
    # uncorrected: the odds are inflated by about 1 / RATE
    assert naive.mean() > 3 * observed
    assert _ece(y, naive) > 0.05


def test_prior_correction_recalibrates_an_unweighted_logistic_model():
    # exact for a logistic model (case-control sampling moves only the intercept); for trees it
    # is an approximation, which is why `propensity train` uses weights
    from sklearn.linear_model import LogisticRegression

    train = sample_negatives(_rows(60_000, 0, "train"), RATE, seed=0)
    test = _rows(60_000, 2, "test")
    features = ["x0", "x1", "x2"]
    model = LogisticRegression().fit(train[features], train["label"])
    naive = model.predict_proba(test[features])[:, 1]
    repaired = prior_correction(naive, RATE)
    y, observed = test["label"].to_numpy(), test["label"].mean()
    assert naive.mean() > 3 * observed
    assert abs(repaired.mean() - observed) / observed < 0.15
    assert _ece(y, repaired) < 0.01
