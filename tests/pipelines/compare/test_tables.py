"""Comparison tables against values worked out by hand on tiny frames."""

import numpy as np
import pandas as pd
import pytest

from propensity.pipelines.compare.tables import band_table, gain_curve, rank_correlation, top_k_table, transition_matrix
from propensity.pipelines.rules.config import Band

BANDS = (Band(name="cold", min_score=0), Band(name="warm", min_score=2), Band(name="hot", min_score=3.5))


def test_top_k_precision_recall_and_lift_by_hand():
    # 10 contacts, 2 conversions (base rate 0.2); the top 20% (2 contacts) hold one of them
    y = np.array([1, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    score = np.array([5.0, 4.0, 3.0, 2.5, 2.0, 1.0, 0.5, 0.4, 0.3, 0.2])
    table = top_k_table(y, {"m": score}, [20, 40]).set_index("k_percent")
    assert table.loc[20, "contacts"] == 2
    assert table.loc[20, "precision"] == pytest.approx(0.5)
    assert table.loc[20, "recall"] == pytest.approx(0.5)
    assert table.loc[20, "lift"] == pytest.approx(0.5 / 0.2)
    assert table.loc[40, "precision"] == pytest.approx(2 / 4) and table.loc[40, "recall"] == pytest.approx(1.0)


def test_top_k_counts_a_tie_at_the_cut_at_its_mean_rate():
    # the top 10% is one contact, but four tie at the top score with one conversion among them
    y = np.array([1, 0, 0, 0] + [0] * 6)
    score = np.array([5.0] * 4 + [1.0] * 6)
    row = top_k_table(y, {"m": score}, [10]).iloc[0]
    assert row["precision"] == pytest.approx(0.25) and row["conversions"] == pytest.approx(0.25)


def test_band_table_counts_and_rates_by_hand_with_empty_bands_listed():
    y = np.array([1, 0, 0, 1, 1])
    score = np.array([0.5, 1.0, 3.9, 4.0, 4.5])  # cold, cold, hot, hot, hot; warm empty
    table = band_table(y, {"m": score}, BANDS).set_index("band")
    assert table["contacts"].tolist() == [2, 0, 3]
    assert table.loc["cold", "conversion_rate"] == pytest.approx(0.5)
    assert np.isnan(table.loc["warm", "conversion_rate"])
    assert table.loc["hot", "conversions"] == 2 and table.loc["hot", "share"] == pytest.approx(0.6)


def test_transition_counts_conversions_and_examples_by_hand():
    rule = np.array([0.0, 0.0, 2.5, 4.0, 4.0, 1.0])  # cold cold warm hot hot cold
    learned = np.array([3.6, 0.1, 2.1, 1.0, 3.9, 3.7])  # hot cold warm cold hot hot
    y = np.array([1, 0, 0, 0, 1, 1])
    ids = ["a", "b", "c", "d", "e", "f"]
    t = transition_matrix(rule, learned, y, ids, BANDS, examples_per_cell=5)
    assert t["bands"] == ["cold", "warm", "hot"]
    assert t["counts"] == [[1, 0, 2], [0, 1, 0], [1, 0, 1]]
    assert t["conversions"] == [[0, 0, 2], [0, 0, 0], [0, 0, 1]]
    assert t["examples"]["cold->hot"] == ["a", "f"] and "warm->cold" not in t["examples"]
    few = transition_matrix(rule, learned, y, ids, BANDS, examples_per_cell=1, seed=3)
    assert len(few["examples"]["cold->hot"]) == 1 and few["examples"]["cold->hot"][0] in {"a", "f"}
    assert few == transition_matrix(rule, learned, y, ids, BANDS, examples_per_cell=1, seed=3)


def test_gain_curve_starts_at_zero_ends_at_one_and_agrees_with_the_top_k_recall():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.1).astype(int)
    score = np.round(rng.random(300) * 5, 1)
    share, captured = gain_curve(y, score)
    assert captured[0] == 0 and captured[-1] == pytest.approx(1.0)
    assert np.all(np.diff(captured) >= -1e-12)
    recall_20 = top_k_table(y, {"m": score}, [20]).iloc[0]["recall"]
    assert captured[20] == pytest.approx(recall_20)


def test_rank_correlation_is_spearman():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    corr = rank_correlation({"a": a, "same_order": a ** 3, "reversed": -a})
    assert corr.loc["a", "same_order"] == pytest.approx(1.0)
    assert corr.loc["a", "reversed"] == pytest.approx(-1.0)
    assert isinstance(corr, pd.DataFrame)
