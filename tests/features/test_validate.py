"""Validation rules: every rejection reason, timestamp parsing, ids, dedupe within a source."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from propensity.features.validate import DataValidationError, plan_columns, validate

NOW = dt.datetime(2024, 6, 1, 12, 0)


def events(**overrides) -> pd.DataFrame:
    """One good event row per list position; overrides replace whole columns."""
    n = max((len(v) for v in overrides.values()), default=1)
    base = {
        "contact_id": ["c1"] * n,
        "event_type": ["visit"] * n,
        "ts": ["2024-05-01T10:00:00Z"] * n,
    }
    base.update(overrides)
    return pd.DataFrame(base)


def check(frame: pd.DataFrame, kind: str = "events", **kwargs):
    return validate(frame, kind, "events.csv", now=NOW, **kwargs)


def only_reject(result) -> dict:
    assert len(result.rejects) == 1, result.rejects
    return result.rejects.iloc[0].to_dict()


# --------------------------------------------------------------------------- rejection reasons


@pytest.mark.parametrize(
    ("column", "bad", "field", "reason"),
    [
        ("contact_id", "", "contact_id", "is empty"),
        ("contact_id", None, "contact_id", "is empty"),
        ("contact_id", "  NULL ", "contact_id", "is empty"),
        ("event_type", "", "event_type", "is empty"),
        ("ts", "yesterday", "ts", "cannot parse 'yesterday' as a timestamp"),
        ("ts", None, "ts", "is missing"),
        ("ts", "1969-12-31T23:59:59Z", "ts", "is before 1970-01-01"),
        ("ts", "2024-06-03T00:00:00Z", "ts", "is more than 1 day after now"),
        ("value", "abc", "value", "cannot parse 'abc' as a number"),
        ("value", "inf", "value", "'inf' is not a finite number"),
        ("value", "NaN", "value", "'NaN' is not a finite number"),
        ("properties", "{plan: pro}", "properties", "is not valid JSON"),
        ("properties", "[1, 2]", "properties", "expected a JSON object, got array"),
        ("properties", '"text"', "properties", "expected a JSON object, got varchar"),
    ],
)
def test_bad_field_rejects_the_row_with_file_row_and_field(column, bad, field, reason):
    fine = {"contact_id": "c1", "event_type": "visit", "ts": "2024-05-01"}.get(column)
    result = check(events(**{column: [fine, bad]}))
    rejected = only_reject(result)
    assert rejected["row_number"] == 2
    assert rejected["field"] == field
    assert rejected["reason"].startswith(f"events.csv row 2, field '{field}': ")
    assert reason in rejected["reason"]
    assert rejected["kind"] == "events"
    assert rejected["source"] == "events.csv"
    assert len(result.good) == 1  # the other row still loads


def test_reason_reads_like_the_documented_example():
    frame = events(ts=[f"2024-05-{d:02d}" for d in range(1, 17)] + ["yesterday"])
    reason = only_reject(check(frame))["reason"]
    assert reason == "events.csv row 17, field 'ts': cannot parse 'yesterday' as a timestamp"


def test_reject_keeps_the_raw_row_as_json():
    frame = events(contact_id=[""], ts=["2024-05-01"])
    raw = only_reject(check(frame))["raw"]
    assert raw == '{"contact_id":"","event_type":"visit","ts":"2024-05-01"}'


def test_mapped_field_is_named_as_in_the_file():
    frame = pd.DataFrame({"user": ["a"], "event_type": ["x"], "time": ["soon"]})
    rejected = only_reject(check(frame, column_map={"contact_id": "user", "ts": "time"}))
    assert rejected["field"] == "time"
    assert "field 'time': cannot parse 'soon'" in rejected["reason"]


def test_future_limit_is_one_day_after_now():
    frame = events(ts=["2024-06-02T12:00:00Z", "2024-06-02T12:00:01Z"])
    result = check(frame)
    assert len(result.good) == 1
    assert only_reject(result)["row_number"] == 2


def test_first_problem_of_a_row_is_reported():
    frame = events(contact_id=[""], ts=["never"])
    assert only_reject(check(frame))["field"] == "contact_id"


# --------------------------------------------------------------------------- missing columns


def test_missing_required_columns_raise_naming_file_fields_and_found_columns():
    frame = pd.DataFrame({"user": ["a"], "event_type": ["x"]})
    with pytest.raises(DataValidationError) as err:
        check(frame)
    message = str(err.value)
    assert message.startswith("events.csv: missing required events column(s) 'contact_id', 'ts'")
    assert "found columns: 'user', 'event_type'" in message
    assert "column_map" in message


def test_column_map_to_an_absent_column_raises():
    with pytest.raises(DataValidationError, match="no such column; found columns: 'a'"):
        plan_columns("events", {"a": "VARCHAR"}, "events.csv", {"contact_id": "user_id"})


def test_column_map_with_an_unknown_canonical_name_raises():
    with pytest.raises(DataValidationError, match="unknown events column"):
        plan_columns(
            "events",
            {"contact_id": "VARCHAR", "event_type": "VARCHAR", "ts": "VARCHAR", "u": "VARCHAR"},
            "events.csv",
            {"user": "u"},
        )


def test_outcomes_need_contact_id_and_ts():
    with pytest.raises(DataValidationError, match="'ts'"):
        validate(pd.DataFrame({"contact_id": ["a"]}), "outcomes", "won.csv")


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-05-01T10:00:00+02:00", "2024-05-01 08:00:00"),
        ("2024-05-01T10:00:00-05:30", "2024-05-01 15:30:00"),
        ("2024-05-01T10:00:00Z", "2024-05-01 10:00:00"),
        ("2024-05-01 10:00:00", "2024-05-01 10:00:00"),
        ("2024-05-01T10:00:00.123456", "2024-05-01 10:00:00.123456"),
        ("2024-05-01", "2024-05-01 00:00:00"),
        ("1714557600", "2024-05-01 10:00:00"),
        ("1714557600000", "2024-05-01 10:00:00"),
        (1714557600, "2024-05-01 10:00:00"),
        (1714557600.5, "2024-05-01 10:00:00.5"),
        (1714557600000, "2024-05-01 10:00:00"),
    ],
)
def test_timestamps_become_naive_utc(raw, expected):
    result = check(events(ts=[raw]))
    assert result.rejects.empty, result.rejects
    assert result.good["ts"].dtype == "datetime64[us]"
    assert result.good["ts"].iloc[0] == pd.Timestamp(expected)


def test_pandas_datetimes_aware_and_naive_are_accepted():
    aware = pd.to_datetime(["2024-05-01T10:00:00+02:00"], utc=True).tz_convert("Europe/Paris")
    naive = pd.to_datetime(["2024-05-01T10:00:00"])
    for ts, expected in [(aware, "2024-05-01 08:00"), (naive, "2024-05-01 10:00")]:
        result = check(events(ts=list(ts)).assign(ts=ts))
        assert result.good["ts"].iloc[0] == pd.Timestamp(expected)


def test_canonical_dtypes_and_defaults():
    result = check(events(ts=["2024-05-01"]))
    good = result.good
    assert list(good.columns) == [
        "event_id", "contact_id", "event_type", "ts", "value", "account_id", "properties",
    ]  # fmt: skip
    assert good["value"].dtype == np.float64
    assert good["value"].iloc[0] == 1.0
    for col in ("event_id", "contact_id", "event_type", "account_id", "properties"):
        assert good[col].dtype == "str", col


def test_integral_float_ids_lose_the_trailing_zero():
    frame = events(contact_id=[11391.0, 7.5], ts=["2024-05-01", "2024-05-02"])
    assert check(frame).good["contact_id"].tolist() == ["11391", "7.5"]


def test_ids_are_trimmed():
    assert check(events(contact_id=["  c9 "])).good["contact_id"].tolist() == ["c9"]


def test_properties_dicts_become_json_text():
    result = check(events(properties=[{"plan": "pro", "seats": 3}]))
    assert result.good["properties"].iloc[0] == '{"plan": "pro", "seats": 3}'


def test_extra_columns_fold_into_properties_when_asked():
    frame = events(properties=['{"a": 1}'], plan=["pro"], empty=[None])
    folded = check(frame, fold_extras=True).good["properties"].iloc[0]
    assert folded == '{"a":1,"plan":"pro"}'
    assert check(frame).good["properties"].iloc[0] == '{"a": 1}'


# --------------------------------------------------------------------------- keys and dedupe


def test_identical_rows_without_an_id_are_distinct_events_and_counted():
    frame = events(ts=["2024-05-01", "2024-05-01", "2024-05-02", "2024-05-01"])
    result = check(frame)
    assert result.read == 4
    assert (result.duplicates, result.identical) == (0, 2)
    assert len(result.good) == 4 and result.good["event_id"].nunique() == 4
    assert check(frame).good["event_id"].tolist() == result.good["event_id"].tolist()  # stable


def test_given_event_ids_dedupe_and_the_first_row_wins():
    frame = events(event_id=["e1", "e1"], event_type=["first", "second"], ts=["2024-05-01"] * 2)
    result = check(frame)
    assert result.good["event_type"].tolist() == ["first"]
    assert result.duplicates == 1


def test_missing_event_id_falls_back_to_a_stable_hash():
    frame = events(event_id=["given", ""], ts=["2024-05-01", "2024-05-02"])
    ids = check(frame).good["event_id"].tolist()
    again = check(frame).good["event_id"].tolist()
    assert ids[0] == "given"
    assert len(ids[1]) == 32 and ids == again


def test_hash_changes_with_the_value():
    a = check(events(value=[1])).good["event_id"].iloc[0]
    b = check(events(value=[2])).good["event_id"].iloc[0]
    assert a != b


def test_outcomes_get_hashed_ids_and_nullable_values():
    frame = pd.DataFrame(
        {"contact_id": ["a", "a", "b"], "ts": ["2024-05-01"] * 3, "outcome": ["won", "won", None]}
    )
    result = validate(frame, "outcomes", "won.csv", now=NOW)
    assert (result.duplicates, result.identical) == (0, 1)  # two identical wins are two outcomes
    assert result.good["value"].isna().all()
    assert result.good["outcome_id"].str.len().eq(32).all()


def test_contacts_keep_attributes_and_the_last_row_of_a_contact():
    frame = pd.DataFrame(
        {
            "contact_id": ["a", "b", "a"],
            "created_at": ["2024-01-01", None, "2024-02-01"],
            "plan": ["free", "pro", "team"],
        }
    )
    result = validate(frame, "contacts", "crm.csv", now=NOW)
    good = result.good.set_index("contact_id")
    assert list(result.good.columns) == ["contact_id", "created_at", "plan"]
    assert good.loc["a", "plan"] == "team"
    assert good.loc["a", "created_at"] == pd.Timestamp("2024-02-01")
    assert pd.isna(good.loc["b", "created_at"])
    assert result.duplicates == 1


def test_bad_contact_created_at_is_rejected():
    frame = pd.DataFrame({"contact_id": ["a"], "created_at": ["someday"]})
    rejected = only_reject(validate(frame, "contacts", "crm.csv", now=NOW))
    assert rejected["reason"] == (
        "crm.csv row 1, field 'created_at': cannot parse 'someday' as a timestamp"
    )


def test_contacts_text_attributes_get_types_when_inferred():
    frame = pd.DataFrame(
        {
            "contact_id": ["a", "b"],
            "seats": ["3", "10"],
            "score": ["0.5", "2"],
            "zip": ["02134", "10001"],
            "trial": ["true", "FALSE"],
        }
    )
    good = validate(frame, "contacts", "crm.csv", infer_types=True).good
    assert good["seats"].tolist() == [3, 10]
    assert good["score"].tolist() == [0.5, 2.0]
    assert good["zip"].tolist() == ["02134", "10001"]
    assert good["trial"].tolist() == [True, False]


def test_row_numbers_come_from_the_source_when_given():
    frame = events(contact_id=["a", ""], ts=["2024-05-01"] * 2).assign(__row_number=[10, 12])
    assert only_reject(check(frame))["row_number"] == 12
