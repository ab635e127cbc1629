"""SHAP explanations of a real trained model: exact sums, agreement of the two engines, batch reasons."""

import json

import numpy as np
import pandas as pd
import pytest

from propensity.pipelines.cli import main
from propensity.pipelines.explain import (
    carry_to_points,
    dependence,
    explain_contacts,
    feature_contributions,
    global_importance,
    plot_dependence,
    plot_importance,
    score_from_margin,
    top_reasons,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def frame(world):
    """Test-split rows of the training set, with their features, as the model saw them."""
    from propensity.features.spine import spine_from_frame
    from propensity.pipelines.explain.jobs import model_features

    con = world.ws.ibis_connection()
    keys = world.result.test_scores[["contact_id", "as_of"]].head(150)
    return model_features(con, spine_from_frame(con, keys), world.result.scorer)


@pytest.fixture(scope="module")
def explanation(world, frame):
    return explain_contacts(world.result.scorer, frame, method="shap")


def test_shap_tree_explainer_and_lightgbm_pred_contrib_agree(world, frame, explanation):
    from propensity.pipelines.training.model import prepare_matrix

    scorer = world.result.scorer
    contrib, contrib_base = feature_contributions(scorer, frame, method="pred_contrib", chunk_size=97)
    # explanation was computed with shap.TreeExplainer
    assert np.abs(explanation.feature_logodds.to_numpy() - contrib.to_numpy()).max() < 1e-6
    assert abs(explanation.base_margin - contrib_base) < 1e-9
    margin = scorer.booster.predict(prepare_matrix(frame, scorer.feature_names, scorer.categories)[0], raw_score=True)
    if scorer.blends_rules:  # the model's margin: the booster's, with the rule score blended in
        probability = scorer.raw_probability(frame)
        margin = np.log(probability) - np.log1p(-probability)
    np.testing.assert_allclose(contrib_base + contrib.sum(axis=1).to_numpy(), margin, atol=1e-9)


def test_group_points_sum_exactly_to_score_minus_baseline(world, frame, explanation):
    explained = explanation.points.sum(axis=1).to_numpy()
    np.testing.assert_allclose(explained, explanation.score - explanation.baseline, rtol=0, atol=1e-12)
    # the explained score is the model's own learned score
    expected = world.result.scorer.score(frame)["learned_score"].to_numpy()
    np.testing.assert_allclose(explanation.score, expected, atol=1e-9)
    assert np.ptp(explanation.score) > 0.5, "the rows should not all score alike"


def test_points_keep_the_sign_of_the_log_odds_and_are_proportional_within_a_row(explanation):
    logodds, points = explanation.logodds.to_numpy(), explanation.points.to_numpy()
    big = np.abs(logodds) > 1e-6
    assert (np.sign(points[big]) * np.sign(logodds[big]) >= 0).all()
    # same secant slope for every group of a row (up to the residual put on the largest group)
    row = int(np.argmax(np.abs(explanation.score - explanation.baseline)))
    ratios = points[row][big[row]] / logodds[row][big[row]]
    assert np.ptp(ratios) < 1e-9


def test_a_path_of_zero_length_gets_zero_points(world):
    scorer = world.result.scorer
    cancelling = pd.DataFrame({"a": [0.7, 0.0], "b": [-0.7, 0.0]})
    points, score, baseline = carry_to_points(scorer, cancelling, base=-3.0)
    assert score[0] == pytest.approx(baseline) and score[1] == pytest.approx(baseline)
    np.testing.assert_allclose(points.sum(axis=1), 0.0, atol=1e-15)
    assert points.loc[0, "a"] >= 0 >= points.loc[0, "b"]
    assert score_from_margin(scorer, np.array([-8.0, 0.0, 8.0])).tolist() == sorted(
        score_from_margin(scorer, np.array([-8.0, 0.0, 8.0])).tolist())


def test_groups_put_an_event_types_features_together_and_attributes_apart(explanation):
    groups = explanation.groups
    assert groups.of_feature["demo_requested__count_7d"] == "demo_requested"
    # the shipped half-lives are chosen from the data: take whichever the model has
    decayed = [c for c in groups.of_feature if c.startswith("demo_requested__decayed_")]
    assert decayed and {groups.of_feature[c] for c in decayed} == {"demo_requested"}
    assert groups.of_feature["demo_requested__mean_gap_days"] == "demo_requested"  # issue 13's families too
    assert groups.kinds["industry"] == "fit" and groups.kinds["account"] == "account"
    counts = [c for c in groups.of_feature if c.startswith("all__count_")]
    assert counts and {groups.of_feature[c] for c in counts} == {"all_activity"}
    assert groups.of_feature["tenure_days"] == "tenure"


def test_top_reasons_are_the_largest_contributions_in_words(explanation):
    reasons = top_reasons(explanation, 3)
    assert list(reasons.columns[:4]) == ["contact_id", "as_of", "learned_score", "baseline"]
    assert {"reason_1", "reason_1_points", "reason_3", "reason_3_points"} <= set(reasons.columns)
    largest = explanation.points.abs().max(axis=1).to_numpy()
    np.testing.assert_allclose(reasons["reason_1_points"].abs(), largest, rtol=0, atol=1e-12)
    assert (reasons["reason_1_points"].abs() >= reasons["reason_2_points"].abs() - 1e-9).all()
    assert reasons["reason_1"].str.contains(":|=| for ", regex=True).all()
    positive = top_reasons(explanation, 2, positive_only=True)
    assert (positive["reason_1_points"].dropna() > 0).all()


def test_global_importance_and_dependence_are_data_then_plots(explanation):
    importance = global_importance(explanation)
    assert importance["share"].sum() == pytest.approx(1.0)
    assert importance["mean_abs_logodds"].is_monotonic_decreasing
    data = dependence(explanation, top=3)
    assert data["feature"].nunique() == 3 and len(data) == 3 * len(explanation)
    import matplotlib

    matplotlib.use("Agg")
    assert len(plot_dependence(data).axes) == 3
    assert plot_importance(importance).axes


def test_explain_cli_prints_json_whose_points_add_up(world, capsys):
    contact = str(world.result.test_scores["contact_id"].iloc[0])
    code = main(["-w", str(world.ws.path), "explain", contact, "--as-of", "2025-04-01", "--json",
                 "--model-name", world.model_name, "--model", world.version])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["contact_id"] == contact
    assert sum(g["points"] for g in payload["learned"]) == pytest.approx(payload["explained"], abs=1e-3)
    breakdown = payload["rules"]["breakdown"]
    assert sum(r["points"] for r in breakdown) == pytest.approx(payload["rules"]["points"], abs=1e-3)
    assert {"learned_points", "rule_score_points", "gap"} <= set(payload["comparison"][0])


def test_explain_cli_names_an_unknown_contact(world, capsys):
    code = main(["-w", str(world.ws.path), "explain", "nobody-42", "--model-name", world.model_name, "--model", world.version])
    assert code == 2
    assert "nobody-42" in capsys.readouterr().err


def test_explain_all_writes_top_reasons_for_every_contact(world, tmp_path, capsys):
    out = tmp_path / "reasons.csv"
    code = main(["-w", str(world.ws.path), "explain", "--all", "--as-of", "2025-04-01", "--out", str(out),
                 "--model-name", world.model_name, "--model", world.version])
    assert code == 0
    reasons = pd.read_csv(out)
    assert len(reasons) > 1000 and reasons["contact_id"].is_unique
    assert {"reason_1", "reason_1_points", "reason_2", "reason_3_points"} <= set(reasons.columns)
    assert "rows/s" in capsys.readouterr().out
