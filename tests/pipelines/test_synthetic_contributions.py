"""The true contributions add up to the hidden one-day log-hazard the oracle converts with."""

import numpy as np

from propensity.pipelines.synthetic import WorldConfig, generate_world, true_probability
from propensity.pipelines.synthetic.contributions import true_contributions


def test_contributions_add_up_to_the_exact_one_day_hazard_and_the_fit_to_the_hidden_fit():
    world = generate_world(WorldConfig(contacts=2000, days=120, seed=4))
    terms = true_contributions(world, "2025-04-01")
    exact = terms.merge(true_probability(world, "2025-04-01", horizon_days=1, n_simulations=1))
    drivers = terms.columns.drop(["contact_id", "as_of"])
    assert "pricing_view" not in drivers and "page_view" in drivers  # one event type in the tables
    p = exact["true_probability"].to_numpy()
    np.testing.assert_allclose(exact[drivers].sum(axis=1) + world.config.baseline_logit, np.log(p / (1 - p)),
                               atol=1e-5)
    fit = ["company_size", "industry", "country", "role", "plan_interest", "lead_source"]
    hidden = world.latent.set_index(world.contacts["contact_id"]).loc[terms["contact_id"], "fit_logit"]
    np.testing.assert_allclose(terms[fit].sum(axis=1), hidden.to_numpy(), atol=1e-12)
    assert (terms["lead_source"] == 0).all() and terms["feature_used"].abs().mean() > 0.05
