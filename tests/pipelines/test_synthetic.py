"""Tests of the synthetic SaaS world and its known truth."""

from __future__ import annotations

import dataclasses
import json
import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from propensity.pipelines.synthetic import (
    EVENT_TYPES,
    HIDDEN_EVENT_WEIGHTS,
    World,
    WorldConfig,
    generate_world,
    iter_event_chunks,
    true_probability,
    write_world,
)

CONFIG = WorldConfig(contacts=2_000, days=180, seed=7)
HORIZON = pd.Timedelta(days=30)


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(CONFIG)


def realised_labels(world: World, truth: pd.DataFrame, as_of: str) -> np.ndarray:
    start = pd.Timestamp(as_of)
    outcomes = world.outcomes
    in_window = outcomes[(outcomes["ts"] >= start) & (outcomes["ts"] < start + HORIZON)]
    return truth["contact_id"].isin(in_window["contact_id"]).to_numpy()


def test_events_have_the_canonical_columns_and_dtypes(world):
    events = world.events
    assert list(events.columns) == [
        "event_id", "contact_id", "event_type", "ts", "value", "account_id", "properties",
    ]
    for column in ("event_id", "contact_id", "event_type", "account_id", "properties"):
        assert pd.api.types.is_string_dtype(events[column]), column
    assert events["ts"].dtype == "datetime64[us]"
    assert events["value"].dtype == "float64"
    assert events[["event_id", "contact_id", "event_type", "ts", "value"]].notna().all().all()
    assert events["event_id"].is_unique
    assert events["event_id"].iloc[0].startswith("e")


def test_contacts_have_ids_accounts_and_fit_attributes(world):
    contacts = world.contacts
    assert list(contacts.columns) == [
        "contact_id", "account_id", "created_at", "company_size", "industry", "country",
        "role", "plan_interest", "lead_source",
    ]
    assert len(contacts) == CONFIG.contacts
    assert contacts["contact_id"].is_unique
    assert contacts["contact_id"].str.fullmatch(r"c\d{6}").all()
    assert contacts["account_id"].str.fullmatch(r"a\d{5}").all()
    assert contacts["account_id"].nunique() <= CONFIG.n_accounts
    assert contacts["created_at"].dtype == "datetime64[us]"
    assert contacts["company_size"].dtype == "int64"
    assert (contacts["company_size"] >= 1).all()
    for column in ("industry", "country", "role", "plan_interest", "lead_source"):
        assert pd.api.types.is_string_dtype(contacts[column]), column
        assert contacts[column].nunique() > 1, column


def test_contacts_of_an_account_share_its_firmographics(world):
    per_account = world.contacts.groupby("account_id")[["company_size", "industry", "country"]]
    assert (per_account.nunique() == 1).all().all()


def test_outcomes_have_the_canonical_columns_and_dtypes(world):
    outcomes = world.outcomes
    assert list(outcomes.columns) == ["outcome_id", "contact_id", "ts", "outcome", "value"]
    assert outcomes["ts"].dtype == "datetime64[us]"
    assert outcomes["value"].dtype == "float64"
    assert (outcomes["outcome"] == "converted").all()
    assert outcomes["outcome_id"].is_unique and outcomes["contact_id"].is_unique
    assert (outcomes["value"] > 0).all()


def test_the_same_config_gives_identical_frames(world):
    again = generate_world(CONFIG)
    for name in ("events", "contacts", "outcomes", "latent"):
        pd.testing.assert_frame_equal(getattr(world, name), getattr(again, name))


def test_different_seeds_give_different_worlds(world):
    other = generate_world(dataclasses.replace(CONFIG, seed=8))
    assert len(other.events) != len(world.events)
    assert not other.contacts["created_at"].equals(world.contacts["created_at"])


def test_the_first_purchase_is_the_outcome_with_the_same_ts_and_value(world):
    purchases = world.events[world.events["event_type"] == "purchase"]
    first = purchases.sort_values("ts").groupby("contact_id", sort=True).first()
    outcomes = world.outcomes.set_index("contact_id").sort_index()
    assert first.index.equals(outcomes.index)
    assert (first["ts"] == outcomes["ts"]).all()
    assert (first["value"] == outcomes["value"]).all()
    assert len(purchases) > len(outcomes)  # some repeat purchases


def test_no_event_happens_before_its_contacts_created_at_or_outside_the_period(world):
    created = world.events["contact_id"].map(world.contacts.set_index("contact_id")["created_at"])
    assert (world.events["ts"] >= created).all()
    start = pd.Timestamp(CONFIG.start)
    assert world.events["ts"].min() >= start
    assert world.events["ts"].max() < start + pd.Timedelta(days=CONFIG.days)
    converted = world.outcomes["contact_id"].map(
        world.contacts.set_index("contact_id")["created_at"]
    )
    assert (world.outcomes["ts"].to_numpy() >= converted.to_numpy()).all()


def test_events_are_sorted_by_contact_then_time_and_carry_the_contacts_account(world):
    events = world.events
    assert events["contact_id"].is_monotonic_increasing
    assert (events.groupby("contact_id")["ts"].diff().dropna() >= pd.Timedelta(0)).all()
    account = events["contact_id"].map(world.contacts.set_index("contact_id")["account_id"])
    assert (events["account_id"] == account).all()


def test_trial_started_and_unsubscribed_happen_at_most_once_per_contact(world):
    for event_type in ("trial_started", "unsubscribed"):
        per_contact = world.events.loc[world.events["event_type"] == event_type, "contact_id"]
        assert per_contact.is_unique, event_type
        assert len(per_contact) > 0, event_type


def test_event_types_are_the_documented_ones_with_pricing_as_a_page_view_path(world):
    assert set(world.events["event_type"]) == set(EVENT_TYPES)
    views = world.events[world.events["event_type"] == "page_view"]
    paths = {json.loads(text)["path"] for text in views["properties"].unique()}
    assert paths == {"/", "/blog", "/docs", "/pricing"}
    assert world.events.loc[world.events["event_type"] != "page_view", "properties"].isna().all()


def test_only_purchases_carry_a_value_other_than_one(world):
    is_purchase = world.events["event_type"] == "purchase"
    assert (world.events.loc[~is_purchase, "value"] == 1.0).all()
    assert (world.events.loc[is_purchase, "value"] > 1.0).all()


def test_base_rates_are_in_the_documented_ranges(world):
    events_per_contact = len(world.events) / CONFIG.contacts
    assert 60 <= events_per_contact <= 150
    assert 0.05 <= len(world.outcomes) / CONFIG.contacts <= 0.15
    truth = true_probability(world, "2025-04-01")
    assert 0.02 <= realised_labels(world, truth, "2025-04-01").mean() <= 0.06


def test_the_truth_is_informative_and_calibrated():
    world = generate_world(WorldConfig(contacts=6_000, days=120, seed=11))
    cutoffs = ("2025-02-15", "2025-04-01")
    truth = pd.concat([true_probability(world, a) for a in cutoffs], ignore_index=True)
    labels = np.concatenate(
        [realised_labels(world, truth[truth["as_of"] == a], a) for a in cutoffs]
    )
    p = truth["true_probability"].to_numpy()
    assert roc_auc_score(labels, p) > 0.75
    # Realised conversions are Bernoulli(p) given the truth: allow 4 standard deviations.
    assert abs(labels.sum() - p.sum()) < 4 * np.sqrt((p * (1 - p)).sum())


def test_true_probability_covers_known_unconverted_contacts_only(world):
    as_of = pd.Timestamp("2025-04-01")
    truth = true_probability(world, as_of.date())
    assert list(truth.columns) == ["contact_id", "as_of", "true_probability"]
    assert truth["as_of"].dtype == "datetime64[us]" and (truth["as_of"] == as_of).all()
    assert truth["true_probability"].between(0, 1).all()
    converted = world.outcomes.loc[world.outcomes["ts"] < as_of, "contact_id"]
    known = world.contacts.loc[world.contacts["created_at"] < as_of, "contact_id"]
    assert set(truth["contact_id"]) == set(known) - set(converted)
    assert len(converted) > 0


def test_a_one_day_truth_is_the_documented_hazard_of_the_history(world):
    as_of = pd.Timestamp("2025-04-01")
    truth = true_probability(world, as_of, horizon_days=1, n_simulations=1)
    history = world.events[world.events["ts"] < as_of]
    is_pricing = history["properties"] == '{"path": "/pricing"}'
    kind = history["event_type"].mask(is_pricing, "pricing_view")
    age_days = (as_of - history["ts"].dt.floor("D")).dt.days
    decayed = (
        (0.5 ** (age_days / CONFIG.half_life_days))
        .groupby([history["contact_id"], kind])
        .sum()
        .unstack(fill_value=0.0)
    )
    weights = pd.Series(dict(HIDDEN_EVENT_WEIGHTS))
    saturated = decayed.reindex(columns=weights.index, fill_value=0.0)
    saturated = saturated / (1.0 + saturated / 3.0)
    latent = world.latent.set_index("contact_id")
    logit = CONFIG.baseline_logit + latent["fit_logit"]
    logit = logit + (saturated @ weights).reindex(latent.index, fill_value=0.0)
    expected = 1.0 / (1.0 + np.exp(-logit))
    np.testing.assert_allclose(
        truth["true_probability"], expected.loc[truth["contact_id"]], rtol=1e-5
    )
    more_paths = true_probability(world, as_of, horizon_days=1, n_simulations=16)
    np.testing.assert_allclose(more_paths["true_probability"], truth["true_probability"])


def test_true_probability_ignores_everything_after_as_of(world):
    as_of = pd.Timestamp("2025-03-01")
    cut = dataclasses.replace(
        world,
        events=world.events[world.events["ts"] < as_of],
        outcomes=world.outcomes[world.outcomes["ts"] < as_of],
    )
    pd.testing.assert_frame_equal(true_probability(world, as_of), true_probability(cut, as_of))


def test_true_probability_is_deterministic_and_shrinks_with_the_horizon(world):
    long = true_probability(world, "2025-03-01", horizon_days=30)
    pd.testing.assert_frame_equal(long, true_probability(world, "2025-03-01", horizon_days=30))
    short = true_probability(world, "2025-03-01", horizon_days=1)
    assert (short["true_probability"] <= long["true_probability"] + 1e-12).all()


@pytest.mark.parametrize("as_of", ["2024-12-31", "2025-06-30", "2025-03-01 12:00"])
def test_true_probability_rejects_cutoffs_outside_the_period_or_off_midnight(world, as_of):
    with pytest.raises(ValueError, match="as_of"):
        true_probability(world, as_of)


def test_iter_event_chunks_concatenated_equal_the_world_events():
    config = WorldConfig(contacts=5_000, days=30, seed=3)
    chunks = list(iter_event_chunks(config, chunk_contacts=2_048))
    assert len(chunks) == 3
    combined = pd.concat(chunks, ignore_index=True)
    pd.testing.assert_frame_equal(combined, generate_world(config).events)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_write_world_round_trips(tmp_path, fmt):
    world = generate_world(WorldConfig(contacts=300, days=60, seed=5))
    cutoffs = (dt.date(2025, 1, 20), dt.date(2025, 2, 10))
    paths = write_world(world, tmp_path, fmt=fmt, truth_as_of=cutoffs, horizon_days=14)
    assert set(paths) == {"events", "contacts", "outcomes", "truth"}
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    expected = {
        "events": world.events,
        "contacts": world.contacts,
        "outcomes": world.outcomes,
        "truth": pd.concat(
            [true_probability(world, a, horizon_days=14) for a in cutoffs], ignore_index=True
        ).assign(horizon_days=14)[["contact_id", "as_of", "horizon_days", "true_probability"]],
    }
    for name, frame in expected.items():
        assert paths[name] == tmp_path / f"{name}.{fmt}"
        back = read(paths[name])
        for column in ("ts", "created_at", "as_of"):
            if column in back:
                back[column] = pd.to_datetime(back[column]).astype("datetime64[us]")
        pd.testing.assert_frame_equal(back, frame, check_dtype=fmt == "parquet")


def test_write_world_writes_no_truth_without_cutoffs(world, tmp_path):
    assert set(write_world(world, tmp_path, fmt="parquet")) == {"events", "contacts", "outcomes"}


def test_hidden_weights_favour_product_signals_over_marketing_ones():
    w = HIDDEN_EVENT_WEIGHTS
    assert max(w, key=w.get) == "teammate_invited"
    assert w["feature_used"] > w["demo_requested"] > w["pricing_view"] >= w["email_open"] > 0
    assert w["unsubscribed"] < 0
    assert set(w) == set(EVENT_TYPES) - {"purchase"} | {"pricing_view"}


def test_world_config_rejects_impossible_sizes():
    with pytest.raises(ValueError):
        WorldConfig(contacts=0)
    with pytest.raises(ValueError):
        WorldConfig(accounts=0)
    assert WorldConfig(contacts=10).n_accounts == 2


@pytest.mark.slow
def test_generate_world_makes_millions_of_events():
    # its speed is the benchmarks' business (a rate assertion failed whenever the machine was busy)
    world = generate_world(WorldConfig(contacts=20_000, days=180))
    assert len(world.events) > 1_000_000
