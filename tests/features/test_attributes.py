"""The attribute guard: identifier-like contacts columns are not features unless included, and it says so."""

from __future__ import annotations

from datetime import datetime

import ibis
import pandas as pd
import pytest

from propensity.features.attributes import (
    ColumnStats,
    choose_attributes,
    identifier_reason,
    measure_columns,
    resolve_attributes,
)
from propensity.features.build import build_features, feature_columns
from propensity.features.config import (
    AttributeSelection,
    FeatureConfig,
    FeatureConfigError,
    load_feature_config,
)
from propensity.features.spine import spine_at

N = 200


def _contacts() -> pd.DataFrame:
    ids = [f"c{i:03d}" for i in range(N)]
    return pd.DataFrame({
        "contact_id": ids,
        "account_id": [f"a{i % 20}" for i in range(N)],
        "created_at": pd.Series([datetime(2025, 1, 1)] * N, dtype="datetime64[us]"),
        "email": [f"person{i}@example.com" for i in range(N)],
        "salesforce_object": ["Contact" if i % 7 == 0 else "Lead" for i in range(N)],
        "plan": [("free", "pro", "team")[i % 3] for i in range(N)],
        "external_ref": [f"X{i * 37:06d}" for i in range(N)],  # unique, a name that does not say so
        "revenue": [1000.0 + 13.5 * i for i in range(N)],  # unique too, but a measurement
        "seats": [1 + i % 9 for i in range(N)],
    })


@pytest.fixture(scope="module")
def tables():
    con = ibis.duckdb.connect()
    contacts = con.create_table("contacts", _contacts())
    events = con.create_table("events", pd.DataFrame({
        "event_id": [f"e{i}" for i in range(N)], "contact_id": [f"c{i:03d}" for i in range(N)],
        "event_type": ["visit"] * N, "ts": pd.Series([datetime(2025, 2, 1)] * N, dtype="datetime64[us]"),
        "value": [1.0] * N, "account_id": pd.Series([None] * N, dtype="str"),
        "properties": pd.Series([None] * N, dtype="str")}))
    return events, contacts


def test_names_that_identify_a_contact_or_a_crm_record_are_identifiers():
    for column in ("email", "Email", "work_email", "phone", "first_name", "lastName", "hubspot_id",
                   "salesforce_object", "sfdcRecordType", "linkedin_url", "notes"):
        assert identifier_reason(column, None) is not None, column
    for column in ("plan", "country", "company_size", "industry", "is_customer", "seats", "identity_verified"):
        assert identifier_reason(column, None) is None, column


def test_near_unique_text_or_integers_are_identifiers_but_floats_are_measurements():
    unique_text = ColumnStats(kind="text", non_null=100, distinct=95, mean_length=8.0)
    assert "95 distinct values over 100 contacts" in identifier_reason("ref", unique_text)
    assert identifier_reason("ref", ColumnStats(kind="integer", non_null=100, distinct=100)) is not None
    assert identifier_reason("revenue", ColumnStats(kind="float", non_null=100, distinct=100)) is None
    # too few rows to tell an identifier from a small table
    assert identifier_reason("ref", ColumnStats(kind="text", non_null=20, distinct=20, mean_length=3.0)) is None
    free_text = ColumnStats(kind="text", non_null=1000, distinct=300, mean_length=120.0)
    assert "free text" in identifier_reason("summary", free_text)
    many = ColumnStats(kind="text", non_null=100_000, distinct=5_000, mean_length=6.0)
    assert "more than 1,000 categories" in identifier_reason("city", many)


def test_by_default_ids_are_dropped_with_their_reason_and_real_attributes_kept(tables):
    _, contacts = tables
    resolved, choice = resolve_attributes(FeatureConfig(), contacts)
    assert choice.kept == ("plan", "revenue", "seats")
    assert set(choice.dropped) == {"email", "salesforce_object", "external_ref"}
    assert resolved.attributes.columns == ("plan", "revenue", "seats")  # what a trained model records
    note = choice.note()
    for column in ("email", "salesforce_object", "external_ref"):
        assert column in note
    assert "200 distinct values over 200 contacts" in note and "attributes: {include" in note


def test_the_feature_build_leaves_identifiers_out_and_include_brings_one_back(tables):
    events, contacts = tables
    spine = spine_at(events, datetime(2025, 3, 1), contacts)
    columns = feature_columns(build_features(events, spine, FeatureConfig(), contacts=contacts))
    assert {"plan", "seats", "revenue"} <= set(columns)
    assert not {"email", "salesforce_object", "external_ref"} & set(columns)

    config = FeatureConfig(attributes=AttributeSelection(include=("salesforce_object",), exclude=("seats",)))
    resolved, choice = resolve_attributes(config, contacts)
    assert choice.kept == ("salesforce_object", "plan", "revenue")
    assert choice.included == ("salesforce_object",) and choice.excluded == ("seats",)
    assert "kept by attributes.include although they look like identifiers: ['salesforce_object']" in choice.note()
    built = build_features(events, spine, resolved, contacts=contacts).execute()
    assert {"salesforce_object", "plan", "revenue"} <= set(built.columns) and "seats" not in built.columns
    assert "email" not in built.columns


def test_all_turns_the_guard_off_and_a_recorded_list_is_read_as_is(tables):
    _, contacts = tables
    everything = FeatureConfig(attributes=AttributeSelection(columns="all"))
    assert set(resolve_attributes(everything, contacts)[1].kept) == {
        "email", "salesforce_object", "plan", "external_ref", "revenue", "seats"}
    # a model recorded before the guard read every column: of_model keeps reading them
    assert FeatureConfig.of_model({"windows_days": [7]}).attributes.columns == "all"
    recorded = FeatureConfig(attributes=AttributeSelection(columns=("seats",)))
    assert resolve_attributes(recorded, contacts)[1].kept == ("seats",)


def test_a_typo_in_include_or_a_contradiction_fails_loudly(tables, tmp_path):
    _, contacts = tables
    with pytest.raises(ValueError, match=r"does not have: \['emial'\]"):
        resolve_attributes(FeatureConfig(attributes=AttributeSelection(include=("emial",))), contacts)
    path = tmp_path / "features.yaml"
    path.write_text("attributes:\n  include: [email]\n  exclude: [email]\n")
    with pytest.raises(FeatureConfigError, match="both name"):
        load_feature_config(path)
    path.write_text("attributes:\n  inclde: [email]\n")
    with pytest.raises(FeatureConfigError, match="inclde"):
        load_feature_config(path)


def test_column_statistics_come_from_one_query(tables):
    _, contacts = tables
    stats = measure_columns(contacts, ["email", "plan", "seats", "revenue"])
    assert stats["email"] == ColumnStats(kind="text", non_null=N, distinct=N, mean_length=pytest.approx(
        sum(len(f"person{i}@example.com") for i in range(N)) / N))
    assert stats["plan"].distinct == 3 and stats["seats"].kind == "integer" and stats["revenue"].kind == "float"
    assert choose_attributes(["contact_id", "plan"], stats, FeatureConfig(include_attributes=False)).kept == ()
