"""The signal world: reproducible, its tables consistent, its oracle the hazard it converts with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from propensity.pipelines.synthetic_signals import (
    SIGNAL_EVENT_TYPES,
    SignalWorldConfig,
    generate_signal_world,
    signal_true_probability,
)

CONFIG = SignalWorldConfig(contacts=3000, days=120, seed=3)


@pytest.fixture(scope="module")
def world():
    return generate_signal_world(CONFIG)


def test_the_same_seed_gives_the_same_world_and_another_seed_another(world):
    again = generate_signal_world(CONFIG)
    pd.testing.assert_frame_equal(again.events, world.events)
    pd.testing.assert_frame_equal(again.outcomes, world.outcomes)
    other = generate_signal_world(SignalWorldConfig(contacts=3000, days=120, seed=4))
    assert not other.events["ts"].head(100).equals(world.events["ts"].head(100))


def test_tables_agree_with_the_hidden_state(world):
    events, contacts, outcomes = world.events, world.contacts, world.outcomes
    assert set(events["event_type"]) == set(SIGNAL_EVENT_TYPES)
    assert len(events) == int(world.counts.sum())
    created = contacts.set_index("contact_id")["created_at"]
    assert (events["ts"].to_numpy() > created.loc[events["contact_id"]].to_numpy()).all()
    assert outcomes["contact_id"].is_unique
    assert (outcomes["ts"].to_numpy() > created.loc[outcomes["contact_id"]].to_numpy()).all()
    bought = events["event_type"] == "credits_bought"
    assert events.loc[bought, "value"].nunique() > 10 and (events.loc[~bought, "value"] == 1).all()


def _hazard_from_the_tables(world, as_of: pd.Timestamp) -> pd.Series:
    """Our own reading of the module's hazard, from the events table (not the hidden counts)."""
    ev = world.events[world.events["ts"] < as_of]
    back = (as_of.normalize() - ev["ts"].dt.normalize()).dt.days  # 1 = yesterday
    ev = ev.assign(back=back)
    ids = world.contacts["contact_id"]

    def per(kind, values):
        return values[ev["event_type"] == kind].groupby(ev["contact_id"]).sum().reindex(ids, fill_value=0)

    pricing = per("pricing_page", 0.5 ** ((ev["back"] - 1) / 3.0))
    report = per("report_run", 0.5 ** ((ev["back"] - 1) / 2.0))
    login_days = (ev[(ev["event_type"] == "app_login") & (ev["back"] <= 14)]
                  .groupby("contact_id")["back"].nunique().reindex(ids, fill_value=0))
    seats = per("seat_added", (ev["back"] <= 30).astype(float))
    integrated = per("integration_connected", pd.Series(1.0, index=ev.index)) > 0
    credit_days = (ev[ev["event_type"] == "credits_bought"].groupby("contact_id")["back"].nunique()
                   .reindex(ids, fill_value=0))
    latent = world.latent.set_index(ids)
    logit = (world.config.baseline_logit + latent["fit_logit"]
             + 2.4 * (1 - np.exp(-pricing / 1.5)) + 0.7 * np.log1p(report)
             + 2.4 * (1 - np.exp(-login_days / 5.0)) + 2.0 * latent["big"] * (1 - np.exp(-seats / 2.0))
             + 1.2 * integrated + 0.9 * (1 - np.exp(-credit_days / 2.0)))
    return 1 / (1 + np.exp(-logit))


def test_a_one_day_truth_is_the_hazard_of_the_observable_history(world):
    as_of = pd.Timestamp("2025-03-20")
    truth = signal_true_probability(world, as_of, horizon_days=1, n_simulations=1).set_index("contact_id")
    expected = _hazard_from_the_tables(world, as_of).loc[truth.index]
    np.testing.assert_allclose(truth["true_probability"], expected, rtol=1e-9)
    eligible = world.contacts.set_index("contact_id").loc[truth.index, "created_at"] < as_of
    assert eligible.all()


def test_the_truth_predicts_the_drawn_conversions(world):
    from sklearn.metrics import roc_auc_score

    as_of = pd.Timestamp("2025-03-01")
    truth = signal_true_probability(world, as_of, horizon_days=30)
    window = world.outcomes[(world.outcomes["ts"] >= as_of) & (world.outcomes["ts"] < as_of + pd.Timedelta(days=30))]
    label = truth["contact_id"].isin(set(window["contact_id"]))
    assert label.sum() > 30
    # calibrated: the expected count is within 4 standard deviations of the drawn one
    p = truth["true_probability"]
    assert abs(label.sum() - p.sum()) < 4 * np.sqrt((p * (1 - p)).sum())
    assert roc_auc_score(label, p) > 0.75
    with pytest.raises(ValueError, match="midnight inside"):
        signal_true_probability(world, "2025-03-01 12:00")
