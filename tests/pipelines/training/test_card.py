"""The model card (training/card.py): the test figures and the calibration shift, from the summary."""

import pandas as pd

from propensity.pipelines.training.card import model_card

SUMMARY = {
    "data_end": "2016-01-01 00:00:00", "features": 296,
    "splits": {"train": {"rows": 9036, "positives": 5232, "cutoffs": 2},
               "test": {"rows": 15030, "positives": 8815, "cutoffs": 2}},
    "calibration_shift": {
        "valid": {"rows": 2337, "rate": 0.5725, "mean_probability": 0.5725, "ece": 0.0192},
        "test": {"rows": 15030, "rate": 0.5865, "mean_probability": 0.5516, "ece": 0.0421},
        "test_by_cutoff": [{"as_of": "2014-11-30", "rows": 8837, "rate": 0.6175, "mean_probability": 0.5645,
                            "ece": 0.0624}],
        "test_largest_gaps_by_account": [{"account_id": "CCC-2014J", "rows": 1868, "rate": 0.543,
                                          "mean_probability": 0.379, "share_of_gap": 0.0205}],
        "shift": 0.0229,
    },
}
METRICS = pd.DataFrame([
    {"model": "learned", "split": "test", "roc_auc": 0.8048, "pr_auc": 0.8375, "brier": 0.1768, "ece": 0.0421,
     "lift_top10": 1.577},
    {"model": "rules", "split": "test", "roc_auc": 0.7125, "pr_auc": 0.755, "brier": 0.2088, "ece": 0.0319,
     "lift_top10": 1.398},
    {"model": "learned", "split": "valid", "roc_auc": 0.9, "pr_auc": 0.9, "brier": 0.1, "ece": 0.01, "lift_top10": 2.0},
])


def test_the_card_states_the_test_figures_and_where_the_calibration_misses():
    card = model_card(SUMMARY, METRICS)
    assert "| learned | 0.8048 | 0.8375 | 0.1768 | 0.0421 | 1.58 |" in card
    assert "| rules | 0.7125 |" in card and "| 0.9000 |" not in card  # test rows only
    assert "| test cut-off 2014-11-30 | 8,837 | 0.618 | 0.565 | 0.0624 |" in card
    assert "| CCC-2014J | 1,868 | 0.543 | 0.379 | +0.0205 |" in card
    assert "Test ECE minus valid ECE: +0.0229." in card
    assert "train 9,036 rows, 5,232 positives, 2 cut-offs" in card


def test_without_a_learned_model_the_card_has_no_calibration_section():
    summary = {k: v for k, v in SUMMARY.items() if k != "calibration_shift"}
    assert "Calibration" not in model_card(summary, METRICS)


def test_train_prints_the_largest_gaps_by_account(tmp_path, capsys):
    from propensity.pipelines.cli.training import print_training
    from propensity.pipelines.training.train import TrainResult

    result = TrainResult(summary=SUMMARY, metrics=METRICS, points_only=False,
                         learned_rules_path=tmp_path / "rules.learned.yaml", learned_rules=None)
    print_training(result)
    out = " ".join(capsys.readouterr().out.split())
    assert "calibration on test: rate 0.587 vs mean probability 0.552, ECE 0.0421 (valid 0.0192)" in out
    assert "largest gaps by account (rate vs mean probability, share of the gap): CCC-2014J 0.543 vs 0.379 (+0.021)" in out
