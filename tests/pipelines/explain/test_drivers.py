"""Explanations name the drivers: little SHAP mass in groups that name no event type or attribute."""

import numpy as np
import pandas as pd
import pytest

AS_OF = "2025-04-01"


@pytest.fixture(scope="module")
def explained(world):
    from propensity.features.spine import spine_at
    from propensity.pipelines.explain import explain_contacts
    from propensity.pipelines.explain.explain import global_importance
    from propensity.pipelines.explain.jobs import model_features

    con = world.ws.ibis_connection()
    frame = model_features(con, spine_at(con.table("events"), AS_OF, con.table("contacts")), world.result.scorer)
    # the contacts the truth is defined for: not converted before the cut-off
    outcomes = world.ws.table("outcomes")
    converted = set(outcomes.loc[pd.to_datetime(outcomes["ts"]) < pd.Timestamp(AS_OF), "contact_id"])
    frame = frame[~frame["contact_id"].isin(converted)].reset_index(drop=True)
    explanation = explain_contacts(world.result.scorer, frame, method="pred_contrib", with_facts=False)
    return frame, explanation, global_importance(explanation)


def test_type_agnostic_groups_hold_at_most_a_tenth_of_the_shap_mass(explained):
    _, explanation, table = explained
    named = {g for g, kind in explanation.groups.kinds.items() if kind in ("event", "fit")}
    share = table.loc[~table["group"].isin(named), "share"].sum()
    assert share <= 0.10, table
    assert "all_activity" not in set(table["group"])  # its features were shared over event types
    # the split is exact: group log-odds still add up to each row's margin minus the base
    np.testing.assert_allclose(explanation.logodds.sum(axis=1), explanation.feature_logodds.sum(axis=1), atol=1e-9)


def test_a_type_agnostic_feature_is_shared_by_what_each_type_put_into_it():
    from propensity.pipelines.explain.groups import group_features
    from propensity.pipelines.explain.spread import spread_over_event_types

    names = ["a__count_7d", "a__days_since_last", "b__count_7d", "b__days_since_last", "all__count_7d",
             "all__days_since_last", "all__distinct_types_7d"]
    groups = group_features(names, ["a", "b"])
    features = pd.DataFrame({"a__count_7d": [3.0, 0.0, 0.0], "b__count_7d": [1.0, 2.0, 0.0],
                             "a__days_since_last": [1.0, 9.0, np.nan], "b__days_since_last": [4.0, 2.0, np.nan]})
    shap = pd.DataFrame(0.0, index=features.index, columns=names)
    shap["all__count_7d"] = [0.8, 0.4, -0.3]
    shap["all__days_since_last"] = [0.2, 0.1, -0.5]
    shap["all__distinct_types_7d"] = [0.6, 0.0, 0.0]
    logodds, regrouped = spread_over_event_types(shap, features, groups)
    assert list(logodds.columns) == ["a", "b"] and "all_activity" not in regrouped.order
    # row 0: counts 3:1, the latest event an `a`, both types seen in the window
    assert logodds.loc[0, "a"] == pytest.approx(0.8 * 0.75 + 0.2 + 0.3)
    assert logodds.loc[0, "b"] == pytest.approx(0.8 * 0.25 + 0.3)
    assert logodds.loc[1].tolist() == pytest.approx([0.0, 0.5])  # only `b` in the window and latest
    # row 2: no events; "no activity" is charged by the rows' average composition (counts 1.5 : 1.5)
    assert logodds.loc[2, "a"] == pytest.approx(logodds.loc[2, "b"])
    np.testing.assert_allclose(logodds.sum(axis=1), shap.sum(axis=1), atol=1e-12)
