"""The repeat-purchase world: reproducible, its tables consistent with the hidden state, its truth
the rate at which customers do buy again."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from propensity.pipelines.synthetic_repeat import (
    REPEAT_EVENT_TYPES,
    RepeatWorldConfig,
    generate_repeat_world,
    repeat_true_probability,
)

CONFIG = RepeatWorldConfig(contacts=4000, days=300, acquisition_days=240, seed=5)


@pytest.fixture(scope="module")
def world():
    return generate_repeat_world(CONFIG)


def test_the_same_seed_gives_the_same_world_and_another_seed_another(world):
    again = generate_repeat_world(CONFIG)
    pd.testing.assert_frame_equal(again.events, world.events)
    pd.testing.assert_frame_equal(again.outcomes, world.outcomes)
    other = generate_repeat_world(RepeatWorldConfig(contacts=4000, days=300, acquisition_days=240, seed=6))
    assert not other.events["ts"].head(100).equals(world.events["ts"].head(100))


def test_every_purchase_is_an_outcome_and_the_first_opens_the_customer(world):
    events, contacts, outcomes = world.events, world.contacts, world.outcomes
    assert set(events["event_type"]) == set(REPEAT_EVENT_TYPES)
    purchases = events[events["event_type"] == "purchase"]
    assert len(outcomes) == len(purchases)
    assert (outcomes["ts"].to_numpy() == purchases["ts"].to_numpy()).all()
    created = contacts.set_index("contact_id")["created_at"]
    assert (events["ts"].to_numpy() > created.loc[events["contact_id"]].to_numpy()).all()
    first = purchases.groupby("contact_id")["ts"].min()
    assert len(first) == len(contacts)  # everyone is acquired with a purchase
    assert ((first - created.loc[first.index]) == pd.Timedelta(microseconds=1)).all()
    assert (events.groupby("contact_id")["ts"].min() == first).all()  # nothing before the acquisition


def test_dead_customers_buy_nothing_more(world):
    latent = world.latent.set_index(pd.Index([f"r{i:06d}" for i in range(CONFIG.contacts)]))
    purchases = world.events[world.events["event_type"] == "purchase"]
    day = (purchases["ts"] - pd.Timestamp(CONFIG.start)) // pd.Timedelta(days=1)
    dead_from = latent.loc[purchases["contact_id"], "dead_from"].to_numpy()
    assert (day.to_numpy() < dead_from).all()
    assert 0.2 < (latent["dead_from"] < CONFIG.days).mean() < 0.9  # churn happens, not to everyone


def test_truth_is_the_rate_at_which_customers_buy_again(world):
    """Binned by the truth, the share that buys in the window matches it (and it ranks them)."""
    as_of = pd.Timestamp(CONFIG.start) + pd.Timedelta(days=250)
    truth = repeat_true_probability(world, as_of, 30)
    window = world.outcomes[(world.outcomes["ts"] >= as_of) & (world.outcomes["ts"] < as_of + pd.Timedelta(days=30))]
    bought = truth["contact_id"].isin(window["contact_id"]).to_numpy()
    p = truth["true_probability"].to_numpy()
    assert len(truth) == int((world.latent["created_day"] < 250).sum())
    bins = np.quantile(p, np.linspace(0, 1, 11))
    which = np.clip(np.searchsorted(bins, p, side="right") - 1, 0, 9)
    for k in range(10):
        inside = which == k
        if inside.sum() >= 100:
            observed, expected = bought[inside].mean(), p[inside].mean()
            sd = np.sqrt(max(expected * (1 - expected), 1e-3) / inside.sum())
            assert abs(observed - expected) < 4 * sd + 0.01, (k, observed, expected)
    assert (p[~(world.latent["dead_from"].to_numpy()[world.latent["created_day"] < 250] > 250)] == 0).all()


def test_truth_refuses_a_cut_off_outside_the_period(world):
    with pytest.raises(ValueError, match="midnight inside"):
        repeat_true_probability(world, "2030-01-01", 30)
    with pytest.raises(ValueError, match="midnight inside"):
        repeat_true_probability(world, pd.Timestamp(CONFIG.start) + pd.Timedelta(hours=30), 30)


def test_the_observable_ceiling_is_calibrated_and_below_the_truth(world):
    """Exact Bayes from the tables: binned, the share that buys matches it; it ranks below the truth
    (which knows who is alive) and above a purchase count."""
    from sklearn.metrics import roc_auc_score

    from propensity.pipelines.synthetic_repeat import repeat_observable_probability

    as_of = pd.Timestamp(CONFIG.start) + pd.Timedelta(days=250)
    truth = repeat_true_probability(world, as_of, 30).merge(repeat_observable_probability(world, as_of, 30))
    window = world.outcomes[(world.outcomes["ts"] >= as_of) & (world.outcomes["ts"] < as_of + pd.Timedelta(days=30))]
    bought = truth["contact_id"].isin(window["contact_id"]).to_numpy()
    p = truth["observable_probability"].to_numpy()
    bins = np.quantile(p, np.linspace(0, 1, 11))
    which = np.clip(np.searchsorted(bins, p, side="right") - 1, 0, 9)
    for k in range(10):
        inside = which == k
        observed, expected = bought[inside].mean(), p[inside].mean()
        assert abs(observed - expected) < 4 * np.sqrt(max(expected * (1 - expected), 1e-3) / inside.sum()) + 0.01
    past = world.events[(world.events["ts"] < as_of) & (world.events["event_type"] == "purchase")]
    count = truth["contact_id"].map(past["contact_id"].value_counts()).fillna(0)
    assert roc_auc_score(bought, count) < roc_auc_score(bought, p) < roc_auc_score(bought, truth["true_probability"])


def test_the_benchmark_config_fits_the_default_world():
    """benchmarks/worlds/repeat_train.yaml (quality_bench --world repeat) validates, its rules load, and
    every cut-off's label window closes inside the default period with a year of history behind it."""
    from pathlib import Path

    from propensity.pipelines.rules.config import load_rules
    from propensity.pipelines.training.config import load_train_config

    config = load_train_config(Path(__file__).resolve().parents[2] / "benchmarks/worlds/repeat_train.yaml")
    load_rules(config.rules)
    default = RepeatWorldConfig()
    start = pd.Timestamp(default.start)
    end = start + pd.Timedelta(days=default.days)
    assert config.recurring and not config.expected_purchases
    assert pd.Timestamp(config.grid.last) + pd.Timedelta(days=config.horizon_days) <= end
    assert pd.Timestamp(config.grid.first) - start >= pd.Timedelta(days=365)
