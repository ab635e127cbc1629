"""The rules as an input of the learned model: columns, the blend chosen on valid, and who refuses them."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from propensity.pipelines.training.rule_blend import (
    Blend,
    choose_blend,
    rule_input_columns,
    rule_score_of,
)


def _world(seed, model_noise, rule_noise, n=4000):
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(2 * signal - 2)))).astype(int)
    model = 1 / (1 + np.exp(-(signal + rng.normal(scale=model_noise, size=n))))
    rules = np.clip(2.5 + signal + rng.normal(scale=rule_noise, size=n), 0, 5)
    return model, rules, y


@pytest.mark.parametrize(("model_noise", "rule_noise"), [(3.0, 0.3), (0.3, 3.0), (1.0, 1.0)])
def test_the_chosen_blend_ranks_valid_at_least_as_well_as_the_rules_and_the_model(model_noise, rule_noise):
    model, rules, y = _world(1, model_noise, rule_noise)
    blend = choose_blend(model, rules, y)
    auc = roc_auc_score(y, blend.apply(model, rules))
    assert auc == pytest.approx(blend.valid_auc_blend, abs=1e-12)
    assert auc >= roc_auc_score(y, rules) and auc >= roc_auc_score(y, model)
    if model_noise > rule_noise:  # a weak model leans on the rules
        assert blend.alpha > 0.5


def test_alpha_zero_leaves_the_model_alone_and_alpha_one_is_the_rules_ranking():
    model, rules, y = _world(2, 1.0, 1.0)
    np.testing.assert_array_equal(Blend(0.0).apply(model, rules), model)
    assert roc_auc_score(y, Blend(1.0, 0.7, 2.0).apply(model, rules)) == pytest.approx(roc_auc_score(y, rules), abs=1e-12)


def test_the_trained_model_reads_the_rules_and_recomputes_their_score_as_the_rule_engine_does(world):
    from propensity.features.spine import spine_at
    from propensity.pipelines.rules.config import load_rules
    from propensity.pipelines.rules.score import activity_points, score_frame
    from propensity.pipelines.training.as_trained import features_as_trained

    scorer = world.result.scorer
    rules = load_rules(world.config.rules)
    assert set(rule_input_columns(rules)) <= set(scorer.feature_names)
    blend = world.result.summary["rule_inputs"]
    assert blend["valid_auc_blend"] >= blend["valid_auc_rules"] - 1e-12  # by construction, on valid
    con = world.ws.ibis_connection()
    events, contacts = con.table("events"), con.table("contacts")
    spine = spine_at(events, "2025-04-01", contacts)
    frame = features_as_trained(events, spine, scorer, contacts).execute().sort_values("contact_id", ignore_index=True)
    raw = activity_points(events, spine, rules).execute().sort_values("contact_id", ignore_index=True)
    expected = score_frame(raw, contacts.execute(), rules)["rule_score"].to_numpy()
    np.testing.assert_allclose(rule_score_of(frame, rules), expected, rtol=0, atol=1e-9)
    scored = scorer.score(frame)  # the blend (when chosen) needs nothing beyond the model's own columns
    assert scored["probability"].between(0, 1).all()


def test_a_frame_without_the_rule_columns_is_refused_by_name(world):
    from propensity.pipelines.rules.config import load_rules

    rules = load_rules(world.config.rules)
    with pytest.raises(ValueError, match=f"rule__{rules.activities[0].name}"):
        rule_score_of(pd.DataFrame({"x": [1.0]}), rules)


def test_the_service_plans_the_rule_columns_of_a_model_that_reads_the_rules_and_refuses_them_without_rules(world):
    import dataclasses

    from propensity.pipelines.serve.feature_plan import FeaturePlan

    scorer = world.result.scorer
    plan = FeaturePlan.from_scorer(scorer)  # served live: its rule__* columns come from the rule state
    assert set(plan.rule_columns) == {c for c in scorer.feature_names if c.startswith("rule__")}
    assert not set(plan.rule_columns) & set(plan.attributes)
    with pytest.raises(ValueError, match=r"reads rule columns .* carries no rules"):
        FeaturePlan.from_scorer(dataclasses.replace(scorer, rule_inputs=None))
