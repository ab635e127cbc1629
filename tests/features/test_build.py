"""build_features against the naive reference, column by column."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import ibis
import numpy as np
import pandas as pd
import pytest
from reference import (
    AS_OF,
    TYPES,
    RefConfig,
    make_world,
    reference_features,
    reference_known,
    snake,
)

from propensity.features.build import (
    build_features,
    discover_event_types,
    feature_columns,
    safe_name,
)
from propensity.features.config import FeatureConfig
from propensity.features.spine import spine_at, spine_from_frame, spine_grid

CONFIG = FeatureConfig(
    windows_days=(7, 30, 90),
    half_lives_days=(7.0, 30.0, 2.5),
    value_weighted_types=("trialStarted",),
    active_days_windows=(1, 7, 30, 90),
    momentum_days=30,
    monetary_types=("trialStarted", "Demo Request"),
)


def _varying(records, types) -> tuple[str, ...]:
    """Our own reading of monetary_types: auto (types whose values are not all equal)."""
    values = {t: {e["value"] for e in records.events if e["event_type"] == t} - {None} for t in types}
    return tuple(t for t in types if len(values[t]) > 1)


def _ref_config(config: FeatureConfig, types=TYPES, records=None) -> RefConfig:
    auto = config.monetary_types == "auto"
    return RefConfig(
        event_types=tuple(types),
        windows=config.windows_days,
        half_lives=config.half_lives_days,
        value_weighted=config.value_weighted_types,
        active_windows=config.active_days_windows,
        momentum=config.momentum_days,
        lifetime=config.lifetime_features,
        trend=config.trend_features,
        monetary=_varying(records, types) if auto else config.monetary_types,
        account_features=config.account_features,
        include_attributes=config.include_attributes,
    )


def _load(seed: int):
    records = make_world(seed)
    events, contacts = records.frames()
    con = ibis.duckdb.connect()
    return records, con, con.create_table("events", events), con.create_table("contacts", contacts)


@pytest.fixture(scope="module")
def world():
    """One seeded world shared by the module (building expressions is the slow part)."""
    return _load(0)


@pytest.fixture(scope="module", params=[0, 1])
def worlds(request):
    """Two seeded worlds for the reference comparisons that matter most."""
    return _load(request.param)


def _execute(expr: ibis.Table) -> pd.DataFrame:
    frame = expr.execute().sort_values(["contact_id", "as_of"], kind="stable")
    return frame.reset_index(drop=True)


def _plain(value):
    """A cell as a comparable Python value (NA -> None, numpy scalars -> Python)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value.item() if hasattr(value, "item") else value


def _floats(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values])


def assert_matches_reference(result: pd.DataFrame, expected: list[dict]) -> None:
    assert list(result.columns) == list(expected[0]), "columns or their order differ"
    assert len(result) == len(expected)
    for column in result.columns:
        got = [_plain(v) for v in result[column]]
        want = [e[column] for e in expected]
        numeric = all(isinstance(v, int | float) or v is None for v in want + got)
        if numeric and not all(isinstance(v, bool) or v is None for v in want):
            np.testing.assert_allclose(
                _floats(got), _floats(want), rtol=1e-12, atol=1e-12, equal_nan=True,
                err_msg=f"column {column}",
            )
        else:
            assert got == want, f"column {column}"


def test_single_as_of_matches_reference_in_every_column(worlds):
    records, _, events, contacts = worlds
    spine = spine_at(events, AS_OF, contacts=contacts)
    result = _execute(build_features(events, spine, CONFIG, contacts=contacts, event_types=TYPES))
    known = reference_known(records.events, AS_OF, records.contacts)
    assert set(result["contact_id"]) == known
    expected = reference_features(
        records.events, [(c, AS_OF) for c in known], _ref_config(CONFIG), records.contacts
    )
    assert_matches_reference(result, expected)


def test_grid_spine_matches_reference_in_every_column(worlds):
    records, _, events, contacts = worlds
    first = AS_OF - timedelta(days=60, microseconds=7)
    spine = spine_grid(events, first, AS_OF, step_days=20, contacts=contacts)
    result = _execute(build_features(events, spine, CONFIG, contacts=contacts, event_types=TYPES))
    cutoffs = [first + timedelta(days=20 * k) for k in range(4)]
    rows = [(c, t) for t in cutoffs for c in reference_known(records.events, t, records.contacts)]
    assert sorted(zip(result["contact_id"], result["as_of"].dt.to_pydatetime())) == sorted(rows)
    expected = reference_features(records.events, rows, _ref_config(CONFIG), records.contacts)
    assert_matches_reference(result, expected)


def test_per_row_as_of_spine_matches_reference(world):
    records, con, events, contacts = world
    offsets = [timedelta(days=d, microseconds=d * 37) for d in (-3, 0, 0.5, 11, 45)]
    rows = [(f"c{i:02d}", AS_OF - offsets[i % len(offsets)]) for i in range(0, 40, 3)]
    rows += [("nobody", AS_OF), rows[0]]  # an unknown contact, and a duplicate row
    frame = pd.DataFrame(rows, columns=["contact_id", "as_of"])
    spine = spine_from_frame(con, frame)
    result = _execute(build_features(events, spine, CONFIG, contacts=contacts, event_types=TYPES))
    expected = reference_features(records.events, rows, _ref_config(CONFIG), records.contacts)
    assert_matches_reference(result, expected)


def test_without_contacts_accounts_come_from_events(world):
    records, _, events, _ = world
    config = CONFIG.model_copy(update={"value_weighted_types": ()})
    spine = spine_at(events, AS_OF)
    result = _execute(build_features(events, spine, config, event_types=TYPES))
    known = reference_known(records.events, AS_OF)
    expected = reference_features(records.events, [(c, AS_OF) for c in known], _ref_config(config, records=records))
    assert_matches_reference(result, expected)
    assert result["account_id"].notna().any()


def test_switches_drop_account_and_attribute_columns(world):
    records, _, events, contacts = world
    config = FeatureConfig(account_features=False, include_attributes=False)
    spine = spine_at(events, AS_OF, contacts=contacts)
    result = _execute(build_features(events, spine, config, contacts=contacts, event_types=TYPES))
    assert not [c for c in result.columns if c.startswith("account__")]
    assert not {"industry", "employees", "is_customer"} & set(result.columns)
    known = reference_known(records.events, AS_OF, records.contacts)
    expected = reference_features(
        records.events, [(c, AS_OF) for c in known], _ref_config(config, records=records), records.contacts
    )
    assert_matches_reference(result, expected)
    assert "trial_started__rfm_monetary" in result.columns  # auto found the varying values


def test_columns_are_named_and_typed_per_the_architecture(world):
    _, _, events, contacts = world
    config = FeatureConfig(windows_days=(7,), half_lives_days=(1.5,), momentum_days=14)
    spine = spine_at(events, AS_OF, contacts=contacts)
    expr = build_features(events, spine, config, contacts=contacts, event_types=["Demo Request"])
    assert list(expr.columns) == [
        "contact_id", "as_of", "account_id",
        "demo_request__count_7d", "demo_request__days_since_last",
        "demo_request__decayed_1.5d", "demo_request__active_days_7d",
        "demo_request__count_total", "demo_request__days_since_first",
        "demo_request__mean_gap_days",
        "demo_request__rfm_frequency", "demo_request__rfm_recency_days",
        "demo_request__rfm_tenure_days", "demo_request__rfm_monetary",
        "demo_request__value_total",
        "all__count_7d", "all__days_since_last", "all__distinct_types_7d",
        "value__sum_7d", "value__max_7d", "tenure_days", "all__momentum_14d",
        "account__active_contacts_7d", "account__count_7d", "account__contacts",
        "industry", "employees", "is_customer",
    ]  # fmt: skip
    schema = expr.schema()
    for column in feature_columns(expr):
        counted = ("count", "active", "distinct", "account__contacts")
        if any(word in column for word in counted):
            assert schema[column].is_int64(), column
        elif column not in ("industry", "employees", "is_customer"):
            assert schema[column].is_float64(), column
    frame = expr.execute()
    assert frame["demo_request__count_7d"].dtype == np.int64
    assert frame["all__days_since_last"].dtype == np.float64
    assert feature_columns(frame) == list(expr.columns)[3:]


def test_build_is_lazy_and_compiles_without_a_backend():
    events = ibis.table(
        {"contact_id": "string", "event_type": "string", "ts": "timestamp(6)",
         "value": "float64", "account_id": "string"},
        name="events",
    )  # fmt: skip
    spine = ibis.table({"contact_id": "string", "as_of": "timestamp(6)"}, name="spine")
    # monetary types given: "auto" would look at the values (one small query)
    config = FeatureConfig(monetary_types=())
    sql = ibis.to_sql(build_features(events, spine, config, event_types=["a", "b"]))
    assert "COUNT(DISTINCT" not in sql  # planned as extra passes over the join by DuckDB
    # the feature pass, and for accounts: the spine rows' accounts and the members they name
    assert sql.count('FROM "events"') == 3
    buying = FeatureConfig(monetary_types=("b",))
    sql = ibis.to_sql(build_features(events, spine, buying, event_types=["a", "b"]))
    assert "COUNT(DISTINCT" not in sql
    assert sql.count('FROM "events"') == 3  # purchase days are level-1 rows: no pass of their own


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [
        ("Demo Request", "demo_request"),
        ("page_view", "page_view"),
        ("pageView", "page_view"),
        ("HTTPRequest", "http_request"),
        ("email.open", "email_open"),
        ("  Webinar -- Attended!! ", "webinar_attended"),
        ("Café visit", "cafe_visit"),
        ("all", "all_event"),
        ("Value", "value_event"),
        ("???", "event"),
        ("a__b", "a_b"),
    ],
)
def test_safe_name_turns_event_types_into_snake_case(event_type, expected):
    assert safe_name(event_type) == expected


def test_reference_names_agree_with_safe_name():
    assert [snake(t) for t in TYPES] == [safe_name(t) for t in TYPES]


def test_types_with_the_same_safe_name_are_refused(world):
    _, _, events, _ = world
    spine = spine_at(events, AS_OF)
    with pytest.raises(ValueError, match="both become 'demo_request'"):
        build_features(events, spine, CONFIG, event_types=["Demo Request", "demo_request"])


def test_attribute_columns_may_not_shadow_features():
    con = ibis.duckdb.connect()
    events = con.create_table(
        "events",
        pd.DataFrame({"contact_id": ["a"], "event_type": ["x"], "value": [1.0],
                      "ts": pd.Series([datetime(2024, 1, 1)], dtype="datetime64[us]"),
                      "account_id": pd.Series([None], dtype="str")}),
    )  # fmt: skip
    contacts = con.create_table(
        "contacts",
        pd.DataFrame({"contact_id": ["a"], "account_id": ["x"], "tenure_days": [3.0],
                      "created_at": pd.Series([None], dtype="datetime64[us]")}),
    )  # fmt: skip
    spine = spine_at(events, "2024-02-01", contacts=contacts)
    with pytest.raises(ValueError, match="tenure_days"):
        build_features(events, spine, FeatureConfig(), contacts=contacts, event_types=["x"])


def test_discover_event_types_keeps_the_most_frequent_sorted_by_name(world):
    records, _, events, _ = world
    counts = pd.Series([e["event_type"] for e in records.events]).value_counts()
    top = counts.sort_index().sort_values(ascending=False, kind="stable").index[:3]
    found = discover_event_types(events, FeatureConfig(max_event_types=3))
    assert found == tuple(sorted(top))
    assert len(discover_event_types(events, FeatureConfig(max_event_types=50))) == len(TYPES)
    listed = FeatureConfig(event_types=("b", "a"))
    assert discover_event_types(events, listed) == ("a", "b")


def test_discovered_types_are_used_when_none_are_given(world):
    _, _, events, _ = world
    spine = spine_at(events, AS_OF)
    expr = build_features(events, spine, FeatureConfig(max_event_types=2))
    prefixes = {c.split("__")[0] for c in feature_columns(expr) if "__" in c}
    assert len(prefixes - {"all", "value", "account"}) == 2


def test_duplicate_spine_rows_do_not_double_counts(world):
    _, con, events, _ = world
    once = spine_from_frame(con, pd.DataFrame({"contact_id": ["c01"], "as_of": [AS_OF]}))
    spine = once.union(once, distinct=False)
    assert spine.count().execute() == 2
    small = FeatureConfig(windows_days=(7,), half_lives_days=(7.0,))
    result = build_features(events, spine, small, event_types=TYPES).execute()
    single = build_features(events, once, small, event_types=TYPES).execute()
    assert len(result) == 1
    pd.testing.assert_frame_equal(result, single)


def test_momentum_is_zero_without_events_and_bounded():
    frame = _momentum_frame()
    assert frame.loc["quiet", "all__momentum_30d"] == 0.0
    assert frame.loc["rising", "all__momentum_30d"] == 1.0
    assert frame.loc["falling", "all__momentum_30d"] == -1.0
    assert math.isclose(frame.loc["mixed", "all__momentum_30d"], (2 - 1) / 3)


def _momentum_frame() -> pd.DataFrame:
    as_of = datetime(2024, 6, 1)
    rows = [
        ("rising", as_of - timedelta(days=30)),  # age exactly 30: the recent window
        ("falling", as_of - timedelta(days=60)),  # age exactly 60: the window before
        ("mixed", as_of - timedelta(days=1)),
        ("mixed", as_of - timedelta(days=2)),
        ("mixed", as_of - timedelta(days=45)),
        ("quiet", as_of - timedelta(days=60, microseconds=1)),  # older than both windows
    ]
    con = ibis.duckdb.connect()
    events = con.create_table(
        "events",
        pd.DataFrame({"contact_id": [r[0] for r in rows], "event_type": "x", "value": 1.0,
                      "ts": pd.Series([r[1] for r in rows], dtype="datetime64[us]"),
                      "account_id": pd.Series([None] * len(rows), dtype="str")}),
    )  # fmt: skip
    spine = spine_at(events, as_of)
    return build_features(events, spine, FeatureConfig(), event_types=["x"]).execute().set_index(
        "contact_id"
    )


def test_spine_from_frame_validates_and_normalises():
    con = ibis.duckdb.connect()
    with pytest.raises(ValueError, match="missing \\['as_of'\\]"):
        spine_from_frame(con, pd.DataFrame({"contact_id": ["a"]}))
    with pytest.raises(ValueError, match="contact_id must not be null"):
        spine_from_frame(con, pd.DataFrame({"contact_id": [None], "as_of": ["2024-01-01"]}))
    with pytest.raises(ValueError, match="as_of must be timestamps"):
        spine_from_frame(con, pd.DataFrame({"contact_id": ["a"], "as_of": ["01/02/2024"]}))
    frame = pd.DataFrame(
        {
            "contact_id": [7, 7, 8],
            "as_of": ["2024-01-02T01:00:00+01:00", "2024-01-02", "2024-01-03"],
        }
    )
    spine = spine_from_frame(con, frame).execute().sort_values(["contact_id", "as_of"])
    assert spine["contact_id"].tolist() == ["7", "8"]  # same instant twice -> one row
    assert spine["as_of"].tolist() == [pd.Timestamp("2024-01-02"), pd.Timestamp("2024-01-03")]


def test_spine_grid_rejects_bad_steps(world):
    _, _, events, _ = world
    with pytest.raises(ValueError, match="step_days"):
        spine_grid(events, AS_OF, AS_OF, step_days=0)
    with pytest.raises(ValueError, match="before first"):
        spine_grid(events, AS_OF, AS_OF - timedelta(days=1), step_days=1)


def test_midnight_cut_offs_match_reference_for_the_purchase_summaries(world):
    # At a midnight the observation ends the day before (lifetimes' T counts whole days to
    # the last day seen); a microsecond later it ends on as_of's own date.
    records, con, events, contacts = world
    midnight = AS_OF.replace(hour=0, minute=0, second=0, microsecond=0)
    cutoffs = [midnight, midnight + timedelta(microseconds=1), midnight - timedelta(days=33)]
    rows = [(f"c{i:02d}", t) for t in cutoffs for i in range(0, 36, 2)]
    spine = spine_from_frame(con, pd.DataFrame(rows, columns=["contact_id", "as_of"]))
    result = _execute(build_features(events, spine, CONFIG, contacts=contacts, event_types=TYPES))
    expected = reference_features(records.events, rows, _ref_config(CONFIG), records.contacts)
    assert_matches_reference(result, expected)
    tenure = result["trial_started__rfm_tenure_days"]
    assert tenure.notna().any() and (result["trial_started__rfm_frequency"] > 0).any()
    at_midnight = result["as_of"] == midnight
    after = result["as_of"] == midnight + timedelta(microseconds=1)
    assert (tenure[after].to_numpy() - tenure[at_midnight].to_numpy() == 1).any()


def test_auto_monetary_types_are_those_whose_values_vary():
    con = ibis.duckdb.connect()
    stamps = pd.Series([datetime(2024, 1, d) for d in (1, 2, 3, 4, 5, 6)], dtype="datetime64[us]")
    events = con.create_table(
        "events",
        pd.DataFrame({"contact_id": ["a"] * 6, "ts": stamps,
                      "event_type": ["click", "click", "order", "order", "flat", "flat"],
                      "value": [1.0, 1.0, 20.0, 35.5, None, 3.0],
                      "account_id": pd.Series([None] * 6, dtype="str")}),
    )  # fmt: skip
    spine = spine_at(events, "2024-02-01")
    expr = build_features(events, spine, FeatureConfig(), event_types=["click", "flat", "order"])
    assert [c for c in expr.columns if "rfm_frequency" in c] == ["order__rfm_frequency"]
    with pytest.raises(ValueError, match=r"monetary_types \['refund'\] are not among"):
        build_features(events, spine, FeatureConfig(monetary_types=("refund",)), event_types=["click"])
