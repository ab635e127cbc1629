"""The BG/NBD repeat-purchase baseline on purchases drawn from a BG/NBD process."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from propensity.pipelines.compare.repeat_purchase import bgnbd_scores, rfm_of

HORIZON = 30.0


def _buyers(n=3000, seed=0):
    """Purchase days before a cut-off (history) and whether one follows within the horizon."""
    rng = np.random.default_rng(seed)
    first = rng.uniform(0, 150, n)  # first purchase, days before the cut-off at day 150
    rate, drop = rng.gamma(0.6, 1 / 15, n), rng.beta(1, 5, n)
    rows = []
    for i in range(n):
        t, last, repeats, alive = first[i], first[i], 0, True
        while alive:
            t += rng.exponential(1 / rate[i])
            alive = rng.random() >= drop[i]
            if t >= 150 or not alive:
                break
            last, repeats = t, repeats + 1
        future = alive and t < 150 + HORIZON  # the next purchase (if still alive) lands in the window
        rows.append({"shop__rfm_frequency": repeats, "shop__rfm_recency_days": last - first[i],
                     "shop__rfm_tenure_days": 150 - first[i], "label": int(future)})
    return pd.DataFrame(rows)


def test_bgnbd_ranks_who_buys_again_and_puts_its_ranking_on_the_rules_scale():
    pytest.importorskip("lifetimes", reason="the btyd extra (lifetimes) is not installed")
    frame = _buyers()
    rule_score = np.clip(frame["shop__rfm_frequency"].to_numpy() / 2.0, 0, 5)  # a crude RFM rule
    probability, score, params = bgnbd_scores(rfm_of(frame, "shop"), HORIZON, rule_score)
    assert set(params) == {"r", "alpha", "a", "b"}
    assert ((probability >= 0) & (probability <= 1)).all() and ((score >= 0) & (score <= 5)).all()
    assert roc_auc_score(frame["label"], probability) > 0.7
    # quantile matching: as many contacts at or above each rule level as the rules put there
    for level in (1.0, 2.0):
        assert abs((score >= level).mean() - (rule_score >= level).mean()) < 0.05


def test_a_frame_without_the_rfm_family_is_refused_by_name():
    with pytest.raises(ValueError, match="shop__rfm_frequency"):
        rfm_of(pd.DataFrame({"x": [1]}), "shop")


def test_a_fit_that_does_not_converge_is_a_reason_and_prints_nothing(capsys):
    # every buyer bought 10,000 times in one day: lifetimes prints scipy's result to stdout and raises
    pytest.importorskip("lifetimes")
    n = 40
    rfm = pd.DataFrame({"frequency": [1e4] * n, "recency": [1.0] * n, "T": [1.0] * n})
    with pytest.raises(ValueError, match="BG/NBD did not converge on 40 buyers .*precision loss"):
        bgnbd_scores(rfm, 30, np.linspace(0, 5, n))
    assert capsys.readouterr().out == ""  # stdout stays the command's own (compare --json)
