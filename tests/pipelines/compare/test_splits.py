"""The backtest's splits are point-in-time: at cut-off c nothing fits on a label not yet known at c."""

import pandas as pd

from propensity.pipelines.compare.evaluation import split_rows
from propensity.pipelines.training.config import SplitSection


def _labelled(cutoffs, contacts=4, horizon_days=20, cohorts=False):
    # cohorts: a new contact per cut-off (one per enrolment, as in OULAD), so no contact reappears
    rows = [{"contact_id": f"c{j}-{i}" if cohorts else f"c{i}", "as_of": pd.Timestamp(c), "label": int(i == 0)}
            for j, c in enumerate(cutoffs) for i in range(contacts)]
    frame = pd.DataFrame(rows)
    frame["as_of"] = frame["as_of"].astype("datetime64[us]")
    frame["label_end"] = frame["as_of"] + pd.Timedelta(days=horizon_days)
    return frame


def test_at_a_past_cutoff_train_and_valid_labels_had_closed_and_test_is_that_cutoff_only():
    cutoffs = pd.date_range("2025-01-01", periods=12, freq="7D")
    labelled = _labelled(cutoffs)
    cutoff = cutoffs[8]
    rows = split_rows(labelled, SplitSection(), last_cutoff=cutoff)
    test = rows[rows["split"] == "test"]
    fitted = rows[rows["split"].isin(["train", "valid"])]
    assert set(test["as_of"]) == {cutoff}
    assert (fitted["label_end"] <= cutoff).all()
    assert not fitted.empty and (rows["as_of"] <= cutoff).all()
    # later cut-offs change nothing at this one
    again = split_rows(labelled[labelled["as_of"] <= cutoff], SplitSection(), last_cutoff=cutoff)
    pd.testing.assert_frame_equal(rows, again)


def test_cohort_rows_whose_labels_were_still_open_at_the_cutoff_are_not_fitted():
    # purging overlaps cannot catch this: the test cut-off's contacts appear nowhere else
    cutoffs = pd.date_range("2025-01-01", periods=12, freq="7D")
    labelled = _labelled(cutoffs, contacts=10, horizon_days=30, cohorts=True)
    cutoff = cutoffs[8]
    rows = split_rows(labelled, SplitSection(valid_fraction=0.3), last_cutoff=cutoff)
    fitted = rows[rows["split"].isin(["train", "valid"])]
    assert set(rows.loc[rows["split"] == "test", "as_of"]) == {cutoff}
    assert not fitted.empty and (fitted["label_end"] <= cutoff).all()
    assert set(fitted["split"]) == {"train", "valid"}


def test_without_a_cutoff_the_split_is_the_training_split():
    cutoffs = pd.date_range("2025-01-01", periods=8, freq="7D")
    rows = split_rows(_labelled(cutoffs), SplitSection())
    assert set(rows.loc[rows["split"] == "test", "as_of"]) == {cutoffs[-1]}


def test_fixed_split_dates_are_replaced_by_counted_cutoffs_in_a_backtest():
    cutoffs = pd.date_range("2025-01-01", periods=10, freq="7D")
    split = SplitSection(valid_from=cutoffs[7], test_from=cutoffs[9])
    rows = split_rows(_labelled(cutoffs), split, last_cutoff=cutoffs[6])
    assert set(rows.loc[rows["split"] == "test", "as_of"]) == {cutoffs[6]}
    assert (rows.loc[rows["split"] != "test", "label_end"] <= cutoffs[6]).all()


def test_gap_stability_says_stable_only_when_every_interval_is_on_one_side():
    from propensity.pipelines.compare.backtest import gap_stability

    table = pd.DataFrame({
        "model": ["rules", "learned", "pts"] * 2,
        "roc_auc_gap": [None, 0.04, 0.01, None, 0.03, -0.01],
        "roc_auc_gap_low": [None, 0.02, -0.01, None, 0.01, -0.03],
        "roc_auc_gap_high": [None, 0.06, 0.03, None, 0.05, 0.01],
    })
    learned, points = gap_stability(table)
    assert learned.startswith("learned: beat the rules at all 2 cut-offs") and "+0.030 to +0.040" in learned
    assert points.startswith("pts: no stable difference from the rules: above them at 0 of 2 cut-offs, below at 0, "
                             "no clear gap at 2")


def test_gap_stability_says_on_which_side_the_clear_gaps_fall():
    from propensity.pipelines.compare.backtest import gap_stability

    table = pd.DataFrame({
        "model": ["rules", "pts"] * 3,
        "roc_auc_gap": [None, -0.005, None, -0.005, None, -0.004],
        "roc_auc_gap_low": [None, -0.009, None, -0.010, None, -0.012],
        "roc_auc_gap_high": [None, -0.001, None, -0.001, None, 0.002],
    })
    (points,) = gap_stability(table)
    assert "above them at 0 of 3 cut-offs, below at 2, no clear gap at 1" in points


def test_a_model_only_the_backtest_refitted_gets_its_own_column():
    """No registered model compared: the backtest still refits the train config's learned model, and
    its verdict line must have a column in the table above it."""
    from propensity.pipelines.compare.backtest import backtest_models

    table = pd.DataFrame({"model": ["rules", "learned", "learned_points"] * 2})
    assert backtest_models(["rules", "learned_points"], table) == ["rules", "learned_points", "learned"]
    assert backtest_models(["rules", "learned"], pd.DataFrame()) == ["rules", "learned"]
