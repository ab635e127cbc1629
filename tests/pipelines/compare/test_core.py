"""compare_scores: the pure middle, checked against scikit-learn and by its own invariants."""

import json
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from propensity.pipelines.compare import CompareConfig, compare_scores
from propensity.pipelines.training.metrics import expected_calibration_error

from compare_helpers import BANDS, scored_frame

CONFIG = CompareConfig(n_boot=200, top_k_percent=(5, 10, 20))


def test_summary_metrics_equal_scikit_learn_on_the_score_and_the_probability():
    frame = scored_frame()
    comparison = compare_scores(frame, BANDS, CONFIG)
    assert comparison.models == ["rules", "learned", "learned_points"]
    summary = comparison.summary.set_index("model")
    y = frame["label"]
    for model, (probability, score) in {"rules": ("rule_probability", "rule_score"),
                                        "learned": ("probability", "learned_score")}.items():
        row = summary.loc[model]
        assert row["roc_auc"] == pytest.approx(roc_auc_score(y, frame[score]))
        assert row["pr_auc"] == pytest.approx(average_precision_score(y, frame[score]))
        assert row["roc_auc_probability"] == pytest.approx(roc_auc_score(y, frame[probability]))
        assert row["pr_auc_probability"] == pytest.approx(average_precision_score(y, frame[probability]))
        assert row["brier"] == pytest.approx(brier_score_loss(y, frame[probability]))
        assert row["ece"] == pytest.approx(expected_calibration_error(y, frame[probability]))
        assert row["roc_auc_low"] < row["roc_auc"] < row["roc_auc_high"]
        assert row["pr_auc_low"] < row["pr_auc"] < row["pr_auc_high"]


def test_gaps_are_differences_to_the_rules_with_a_paired_interval():
    comparison = compare_scores(scored_frame(), BANDS, CONFIG)
    summary = comparison.summary.set_index("model")
    gaps = comparison.gaps.set_index("model")
    assert list(gaps.index) == ["learned", "learned_points"]
    gap = gaps.loc["learned"]
    assert gap["roc_auc_gap"] == pytest.approx(summary.loc["learned", "roc_auc"] - summary.loc["rules", "roc_auc"])
    assert gap["roc_auc_gap_low"] <= gap["roc_auc_gap"] <= gap["roc_auc_gap_high"]
    # pairing: the gap's interval is narrower than the two models' intervals side by side
    width = gap["roc_auc_gap_high"] - gap["roc_auc_gap_low"]
    assert width < (summary.loc["learned", "roc_auc_high"] - summary.loc["learned", "roc_auc_low"]) + (
        summary.loc["rules", "roc_auc_high"] - summary.loc["rules", "roc_auc_low"])


def test_tables_cover_every_model_k_and_band_and_the_transitions_add_up():
    frame = scored_frame()
    comparison = compare_scores(frame, BANDS, CONFIG)
    assert len(comparison.top_k) == 3 * 3 and len(comparison.bands) == 3 * 3
    for model in comparison.models:
        assert comparison.bands.query("model == @model")["contacts"].sum() == len(frame)
    counts = np.array(comparison.transitions["rules->learned"]["counts"])
    assert counts.sum() == len(frame)
    rule_hot = (frame["rule_score"] >= 3.5).sum()
    assert counts[2].sum() == rule_hot
    assert comparison.meta["cutoffs"] == ["2025-05-01"]


def test_the_json_form_is_strict_json_without_nan():
    frame = scored_frame(n=60, seed=4)
    frame.loc[:, "label"] = 0  # a single class: AUCs are undefined, and must become null, not NaN
    comparison = compare_scores(frame, BANDS, CONFIG)
    assert comparison.warnings and math.isnan(comparison.summary["roc_auc"].iloc[0])
    text = json.dumps(comparison.to_dict(), allow_nan=False)
    assert json.loads(text)["summary"][0]["roc_auc"] is None


def test_missing_columns_and_off_scale_scores_are_refused_with_names():
    frame = scored_frame(n=50)
    with pytest.raises(ValueError, match="lacks columns \\['rule_score'\\]"):
        compare_scores(frame.drop(columns="rule_score"), BANDS, CONFIG,
                       models={"rules": ("rule_probability", "rule_score")})
    bad = frame.assign(learned_score=frame["learned_score"] + 6)
    with pytest.raises(ValueError, match="'learned'.*not on the 0-5 scale"):
        compare_scores(bad, BANDS, CONFIG)
    with pytest.raises(ValueError, match="reference model 'rules'"):
        compare_scores(frame, BANDS, CONFIG, models={"learned": ("probability", "learned_score")})
