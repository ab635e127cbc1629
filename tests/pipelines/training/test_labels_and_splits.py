from datetime import datetime

import pandas as pd
import pytest

from propensity.pipelines.training.labels import cutoff_grid, label_spine
from propensity.pipelines.training.splits import assign_splits, purge_overlaps


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


def test_count_based_splits_leave_an_embargo_so_no_label_window_runs_into_the_next_split():
    dates = ["2025-01-01", "2025-01-15", "2025-02-01", "2025-02-15", "2025-03-01", "2025-03-15", "2025-04-01"]
    spine = _spine([(c, d) for d in dates for c in "ab"])
    labelled = label_spine(spine, _outcomes([]), 30, data_end=END)
    split = assign_splits(labelled)
    by_cut = dict(zip(labelled["as_of"].dt.strftime("%m-%d"), split.astype(object)))
    # test = Apr-01; valid = the latest cut-off whose window closes by Apr-01 (Mar-01);
    # train = cut-offs whose windows close by Mar-01 (Jan-01, Jan-15); the rest is the gap
    assert by_cut["04-01"] == "test" and by_cut["03-01"] == "valid"
    assert by_cut["01-01"] == by_cut["01-15"] == "train"
    assert pd.isna(by_cut["03-15"]) and pd.isna(by_cut["02-15"])
    assert purge_overlaps(labelled, split).sum() == 2 * 4


def test_purging_drops_whole_cutoffs_never_single_contacts():
    # explicit dates put overlapping windows of the same contact in train and test
    spine = _spine([("a", "2025-01-01"), ("b", "2025-01-01"), ("a", "2025-01-20"), ("c", "2025-01-10")])
    labelled = label_spine(spine, _outcomes([("b", "2025-01-05", "won")]), 30, data_end=END)
    split = assign_splits(labelled, valid_from=datetime(2025, 1, 10), test_from=datetime(2025, 1, 20))
    keep = purge_overlaps(labelled, split)
    kept = labelled[keep]
    # the Jan-01 cut-off shares contact a with the test window it overlaps: all of it goes, b too
    assert sorted(kept["as_of"].dt.strftime("%m-%d").unique()) == ["01-10", "01-20"]


def test_different_contacts_in_overlapping_windows_are_not_purged():
    spine = _spine([("a", "2025-01-01"), ("b", "2025-01-10"), ("c", "2025-01-20")])
    labelled = label_spine(spine, _outcomes([]), 30, data_end=END)
    split = assign_splits(labelled, valid_from=datetime(2025, 1, 10), test_from=datetime(2025, 1, 20))
    assert purge_overlaps(labelled, split).all()


def test_too_few_cutoffs_for_a_time_split_is_a_clear_error():
    labelled = label_spine(_spine([("a", "2025-01-01"), ("a", "2025-01-05"), ("a", "2025-01-09")]),
                           _outcomes([]), 10, data_end=END)
    with pytest.raises(ValueError, match="do not run into the next split"):
        assign_splits(labelled)


def test_a_valid_fraction_holds_out_whole_contacts_before_the_test_period():
    spine = _spine([(f"c{i}", d) for d in ["2025-01-01", "2025-02-01"] for i in range(400)]
                   + [(f"t{i}", "2025-04-01") for i in range(50)])
    labelled = label_spine(spine, _outcomes([]), 30, data_end=END)
    split = assign_splits(labelled, test_from=datetime(2025, 3, 1), valid_fraction=0.25)
    frame = labelled.assign(split=split.astype(str))
    assert set(frame.loc[frame["as_of"] >= "2025-03-01", "split"]) == {"test"}
    share = (frame.loc[frame["as_of"] < "2025-03-01", "split"] == "valid").mean()
    assert 0.18 < share < 0.32
    assert frame.groupby("contact_id")["split"].nunique().max() == 1
    again = assign_splits(labelled, test_from=datetime(2025, 3, 1), valid_fraction=0.25)
    assert again.equals(split)
