from datetime import datetime

import pandas as pd
import pytest

from pipelines.training.labels import cutoff_grid, label_spine
from pipelines.training.splits import assign_splits, purge_overlaps


def _spine(rows):
    return pd.DataFrame(rows, columns=["contact_id", "as_of"]).assign(as_of=lambda d: pd.to_datetime(d["as_of"]))


def _outcomes(rows):
    return pd.DataFrame(rows, columns=["contact_id", "ts", "outcome"]).assign(ts=lambda d: pd.to_datetime(d["ts"], format="ISO8601"))


END = datetime(2025, 12, 31)


def test_a_conversion_at_exactly_as_of_is_a_positive_and_at_the_window_end_is_not():
    spine = _spine([("a", "2025-03-01"), ("b", "2025-03-01"), ("c", "2025-03-01")])
    outcomes = _outcomes([("a", "2025-03-01", "won"), ("b", "2025-03-31", "won"), ("c", "2025-03-30 23:59", "won")])
    labelled = label_spine(spine, outcomes, 30, data_end=END).set_index("contact_id")
    assert labelled["label"].to_dict() == {"a": 1, "b": 0, "c": 1}


def test_one_time_conversions_drop_contacts_already_converted():
    spine = _spine([("a", "2025-03-01"), ("a", "2025-04-01"), ("b", "2025-04-01")])
    outcomes = _outcomes([("a", "2025-03-10", "won"), ("a", "2025-04-10", "won")])
    labelled = label_spine(spine, outcomes, 30, data_end=END)
    assert labelled[["contact_id", "label"]].values.tolist() == [["a", 1], ["b", 0]]


def test_recurring_outcomes_label_any_outcome_in_the_window_and_keep_everyone():
    spine = _spine([("a", "2025-03-01"), ("a", "2025-04-01"), ("b", "2025-04-01")])
    outcomes = _outcomes([("a", "2025-03-10", "renewal"), ("a", "2025-04-10", "renewal")])
    labelled = label_spine(spine, outcomes, 30, data_end=END, recurring=True)
    assert labelled["label"].tolist() == [1, 1, 0]


def test_rows_whose_window_runs_past_the_data_are_dropped_not_negatives():
    spine = _spine([("a", "2025-12-15"), ("b", "2025-12-01")])
    labelled = label_spine(spine, _outcomes([]), 30, data_end=END)
    assert labelled["contact_id"].tolist() == ["b"]


def test_only_qualifying_outcomes_count():
    spine = _spine([("a", "2025-03-01")])
    outcomes = _outcomes([("a", "2025-03-05", "churned")])
    assert label_spine(spine, outcomes, 30, data_end=END, qualifying=["won"])["label"].tolist() == [0]


def test_cutoff_grid_includes_both_ends():
    cuts = cutoff_grid(datetime(2025, 1, 1), datetime(2025, 1, 29), 7)
    assert cuts[0] == datetime(2025, 1, 1) and cuts[-1] == datetime(2025, 1, 29) and len(cuts) == 5


def test_splits_follow_time_and_purge_overlapping_windows_of_the_same_contact():
    spine = _spine([(c, d) for d in ["2025-01-01", "2025-02-01", "2025-03-01", "2025-04-01"] for c in "ab"])
    labelled = label_spine(spine, _outcomes([]), 45, data_end=END)
    split = assign_splits(labelled)
    assert split.tolist() == ["train"] * 4 + ["valid"] * 2 + ["test"] * 2
    keep = purge_overlaps(labelled, split)
    # 45-day windows: Feb-01 train rows overlap the Mar-01 valid rows; Mar-01 valid overlaps Apr-01 test
    kept = labelled[keep].assign(split=split[keep])
    assert kept.groupby("split", observed=True).size().to_dict() == {"train": 2, "test": 2}


def test_too_few_cutoffs_for_a_time_split_is_a_clear_error():
    labelled = label_spine(_spine([("a", "2025-01-01"), ("a", "2025-02-01")]), _outcomes([]), 10, data_end=END)
    with pytest.raises(ValueError, match="at least 3 distinct cut-offs"):
        assign_splits(labelled)
