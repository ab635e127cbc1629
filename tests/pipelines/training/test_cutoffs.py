"""The cut-off plan (labels -> split -> purge) and its errors, on small hand-made frames.

Each error case checks that the fix the message offers really plans on the same rows.
"""

import re
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from propensity.pipelines.training.config import TrainConfig
from propensity.pipelines.training.cutoffs import (
    DataEnd,
    NotEnoughPositives,
    SplitError,
    default_data_end,
    plan_rows,
)

END = DataEnd(value=datetime(2025, 12, 31), source="config", start=datetime(2025, 1, 1))


def _spine(cuts, contacts=50):
    rows = [(f"c{i}", c) for c in cuts for i in range(contacts)]
    return pd.DataFrame(rows, columns=["contact_id", "as_of"]).assign(
        as_of=lambda d: pd.to_datetime(d["as_of"]).astype("datetime64[us]"))


def _outcomes(rows):
    return pd.DataFrame(rows, columns=["contact_id", "ts", "outcome"]).assign(
        ts=lambda d: pd.to_datetime(d["ts"]).astype("datetime64[us]"))


def _purchases(contacts=50, n=400, start="2025-01-06", days=360, seed=0):
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp(start) + pd.to_timedelta(rng.integers(0, days * 24, n), unit="h")
    return _outcomes([(f"c{i}", t, "purchase") for i, t in zip(rng.integers(0, contacts, n), ts)])


def _config(cuts, **overrides) -> TrainConfig:
    data = {"rules": "rules.yaml", "grid": {"first": cuts[0], "last": cuts[-1], "step_days": 7},
            "horizon_days": 30, "min_positives": 5}
    data.update(overrides)
    return TrainConfig.model_validate(data)


def _offered_horizon(message: str) -> int:
    found = re.search(r"horizon_days: (\d+) \(the longest", message)
    assert found, message
    return int(found.group(1))


def test_the_default_data_end_is_the_midnight_after_the_day_of_the_latest_observation():
    assert default_data_end(datetime(2025, 4, 30, 23, 59, 56)) == datetime(2025, 5, 1)
    assert default_data_end(datetime(2025, 4, 30)) == datetime(2025, 5, 1)


def test_the_report_names_each_dropped_cutoff_its_rule_and_the_data_end_that_keeps_it():
    cuts = pd.date_range("2025-01-06", periods=12, freq="7D")  # .. 2025-03-24
    config = _config(cuts, horizon_days=21, recurring=True)
    planned = plan_rows(_spine(cuts), _purchases(), config, DataEnd(value=datetime(2025, 4, 10)))
    report = planned.report
    fates = {f"{f.as_of:%m-%d}": f for f in report.cutoffs}
    # 03-24: its 21-day window closes 04-14, after data_end 04-10
    assert fates["03-24"].dropped_by == "window_past_data_end"
    assert fates["03-24"].keep_with_data_end == datetime(2025, 4, 14)
    # test = 03-17 (the latest labelled), valid = 02-24 (window closes by 03-17), train by 02-03
    assert report.used("test") == [datetime(2025, 3, 17)] and report.used("valid") == [datetime(2025, 2, 24)]
    assert report.used("train") == list(pd.date_range("2025-01-06", "2025-02-03", freq="7D"))
    assert {fates[d].dropped_by for d in ("02-10", "02-17", "03-03", "03-10")} == {"between_splits"}
    assert set(planned.rows["as_of"].dt.strftime("%m-%d")) == {"01-06", "01-13", "01-20", "01-27", "02-03",
                                                                "02-24", "03-17"}
    assert report.to_dict()["test"] == ["2025-03-17"]


def test_a_horizon_too_long_for_the_grid_is_explained_with_the_arithmetic_and_a_fix_that_plans():
    cuts = pd.date_range("2025-01-06", periods=34, freq="7D")  # 34 weekly cut-offs, .. 2025-08-25
    spine, outcomes = _spine(cuts), _purchases()
    config = _config(cuts, horizon_days=120, recurring=True)
    with pytest.raises(SplitError) as caught:
        plan_rows(spine, outcomes, config, END)
    message = str(caught.value)
    assert "the spine has 34 cut-offs" not in message  # the old message, which hid the cause
    assert "the train split would be empty" in message
    # the arithmetic: test 08-25, valid by 08-25 - 120 days, train by the valid cut-off - 120 days
    assert "2025-08-25 - 120 days = 2025-04-27: found 2025-04-21" in message
    assert "2025-04-21 - 120 days = 2024-12-22: found none" in message
    assert re.search(r"32 cut-offs \(2025-01-06 \.\. 2025-08-18, 1,600 rows, [\d,]+ positives\) between splits", message)
    offered = _offered_horizon(message)
    assert offered < 120
    planned = plan_rows(spine, outcomes, config.model_copy(update={"horizon_days": float(offered)}), END)
    assert planned.report.used("train")
    with pytest.raises(SplitError):  # and it is the longest
        plan_rows(spine, outcomes, config.model_copy(update={"horizon_days": float(offered + 1)}), END)
    assert "split: {valid_fraction: 0.2}" in message


def test_a_horizon_as_long_as_the_history_says_no_training_cutoff_exists_and_offers_the_longest_that_does():
    # about 9 months of weekly cut-offs and purchases, 9 months of labels
    cuts = pd.date_range("2025-01-06", periods=39, freq="7D")
    spine, outcomes = _spine(cuts), _purchases(n=600, days=355)
    config = _config(cuts, horizon_days=270, recurring=True, split={"valid_fraction": 0.2})
    with pytest.raises(SplitError) as caught:
        plan_rows(spine, outcomes, config, END, min_positives=5)
    message = str(caught.value)
    assert "no cut-off can be an honest training cut-off under any split" in message
    assert "2 x 270 = 540 days from the first cut-off to data_end" in message
    assert "purged" in message
    offered = _offered_horizon(message)
    planned = plan_rows(spine, outcomes, config.model_copy(update={"horizon_days": float(offered)}), END,
                        min_positives=5)
    assert planned.report.used("train") and planned.report.used("test")
    assert int(planned.rows.loc[planned.rows["split"] == "train", "label"].sum()) >= 5
    with pytest.raises(SplitError):
        plan_rows(spine, outcomes, config.model_copy(update={"horizon_days": float(offered + 1)}), END,
                  min_positives=5)


def test_too_few_positives_after_the_purge_blames_the_purge_not_a_short_horizon():
    # the same contacts every week; every purchase falls after mid-May, so only the cut-offs whose
    # 60-day windows run into the test window hold positives, and the purge removes exactly those
    cuts = pd.date_range("2025-01-06", periods=20, freq="7D")  # .. 2025-05-19
    rng = np.random.default_rng(1)
    days = pd.Timestamp("2025-05-17") + pd.to_timedelta(rng.integers(0, 45 * 24, 900), unit="h")
    outcomes = _outcomes([(f"c{i}", t, "purchase") for i, t in zip(rng.integers(0, 50, 900), days)])
    spine = _spine(cuts)
    config = _config(cuts, horizon_days=60, recurring=True, split={"valid_fraction": 0.3})
    end = DataEnd(value=datetime(2025, 7, 31))
    with pytest.raises(NotEnoughPositives) as caught:
        plan_rows(spine, outcomes, config, end, min_positives=5)
    message = str(caught.value)
    assert message.startswith("only 0 positive(s) in the training split")
    assert re.search(r"cut-offs \(2025-03-24 \.\. 2025-05-12, [\d,]+ rows, [1-9][\d,]* positives\) purged", message)
    assert "a longer horizon_days widens those windows and removes more" in message
    offered = int(re.search(r"horizon_days: (\d+) \(the longest shorter horizon", message).group(1))
    planned = plan_rows(spine, outcomes, config.model_copy(update={"horizon_days": float(offered)}), end,
                        min_positives=5)
    assert int(planned.rows.loc[planned.rows["split"] == "train", "label"].sum()) >= 5


def test_a_purchase_log_where_everyone_already_bought_says_so_and_suggests_recurring():
    cuts = pd.date_range("2025-03-03", periods=10, freq="7D")
    # every contact bought in January and keeps buying
    outcomes = _outcomes([(f"c{i}", f"2025-01-{10 + i % 20:02d}", "purchase") for i in range(50)]
                         + [(f"c{i}", f"2025-04-{1 + i % 28:02d}", "purchase") for i in range(50)])
    spine = _spine(cuts)
    config = _config(cuts, horizon_days=7, recurring=False)
    with pytest.raises(SplitError) as caught:
        plan_rows(spine, outcomes, config, DataEnd(value=datetime(2025, 6, 30)))
    message = str(caught.value)
    assert "runs past" not in message  # the old diagnosis
    assert "every contact known then had already converted" in message
    assert "50 of 50 contacts (100%) had an outcome before their first cut-off" in message
    assert "set recurring: true" in message
    fixed = plan_rows(spine, outcomes, config.model_copy(update={"recurring": True}), DataEnd(value=datetime(2025, 6, 30)))
    assert fixed.rows["label"].sum() > 0


def test_most_contacts_converted_before_the_grid_is_a_note_even_when_the_split_works():
    cuts = pd.date_range("2025-03-03", periods=10, freq="7D")
    early = [(f"c{i}", "2025-01-15", "purchase") for i in range(30)]  # 30 of 50 bought before the grid
    later = [(f"c{i}", f"2025-03-{5 + i % 20:02d}", "purchase") for i in range(30, 50)]
    planned = plan_rows(_spine(cuts), _outcomes(early + later), _config(cuts, horizon_days=7, min_positives=1),
                        DataEnd(value=datetime(2025, 6, 30)))
    assert planned.report.converted_before_first == 30
    assert any("set recurring: true" in note for note in planned.report.notes)
