"""The paths that make `explain` and `score --model` quick give the answers of the slow ones:
the model read from the workspace's registry without MLflow, pred_contrib instead of SHAP, and
features built for a few contacts instead of everyone, their frame converted through Arrow."""

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from propensity.features.spine import spine_at, spine_from_frame
from propensity.pipelines.explain.jobs import explain_one, model_features
from propensity.pipelines.project import Project
from propensity.pipelines.training.as_trained import features_as_trained, features_frame
from propensity.pipelines.training.registry import load_model_context

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def as_of(world):
    return pd.Timestamp(world.result.test_scores["as_of"].max())


def test_the_workspace_registry_read_without_mlflow_is_the_version_mlflow_resolves(world, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    fast = load_model_context(world.ws, world.version, world.model_name, None)
    assert fast.loaded_pyfunc is None, "the workspace's own registry should be read without MLflow"
    slow = load_model_context(world.ws, world.version, world.model_name,
                              f"sqlite:///{world.ws.layout.mlflow_db.resolve()}")
    assert slow.loaded_pyfunc is not None
    assert (fast.name, fast.version, fast.run_id, fast.uri, fast.folder) == \
        (slow.name, slow.version, slow.run_id, slow.uri, slow.folder)
    assert fast.params == slow.params and fast.params
    frame = world.result.test_scores  # has the model's features
    con = world.ws.ibis_connection()
    features = model_features(con, spine_from_frame(con, frame[["contact_id", "as_of"]].head(300)), fast.scorer)
    pdt.assert_frame_equal(fast.scorer.score(features), slow.pyfunc.predict(features[slow.scorer.feature_names]))
    # the pyfunc is still there when asked for (Spark ships it), loaded from the same artifacts
    pdt.assert_frame_equal(fast.pyfunc.predict(features[fast.scorer.feature_names]), fast.scorer.score(features))


def test_a_registry_that_is_not_the_workspace_one_is_left_to_mlflow(world, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    from propensity.pipelines.training.registry import _from_workspace_registry

    assert _from_workspace_registry(world.ws, world.version, world.model_name) is None
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert _from_workspace_registry(world.ws, "no-such-alias", world.model_name) is None
    assert _from_workspace_registry(world.ws, "999", world.model_name) is None


def test_explaining_with_pred_contrib_gives_the_shap_explanation(world, as_of):
    scorer = world.result.scorer
    rules = Project(world.ws).rules(None)[0]
    contacts = world.result.test_scores.sort_values("learned_score")["contact_id"].astype(str)
    for contact in [contacts.iloc[0], contacts.iloc[len(contacts) // 2], contacts.iloc[-1]]:
        fast = explain_one(world.ws, contact, as_of, scorer, rules, method="pred_contrib")
        slow = explain_one(world.ws, contact, as_of, scorer, rules, method="shap")
        assert fast.learned_score == slow.learned_score and fast.baseline == pytest.approx(slow.baseline, abs=1e-12)
        pdt.assert_frame_equal(fast.learned.drop(columns=["logodds", "points"]),
                               slow.learned.drop(columns=["logodds", "points"]))
        np.testing.assert_allclose(fast.learned[["logodds", "points"]].to_numpy(),
                                   slow.learned[["logodds", "points"]].to_numpy(), rtol=0, atol=1e-9)
        pdt.assert_frame_equal(fast.comparison.drop(columns=["learned_points", "gap"]),
                               slow.comparison.drop(columns=["learned_points", "gap"]))


def test_features_of_a_few_contacts_are_their_rows_of_the_whole_build(world, as_of):
    """A spine of a few ids (as `explain` builds) gives exactly those contacts' rows of the full
    build: account features still count the colleagues outside the spine, point in time as ever."""
    scorer = world.result.scorer
    con = world.ws.ibis_connection()
    everyone = model_features(con, spine_at(con.table("events"), as_of, contacts=con.table("contacts")), scorer)
    # contacts that share an account with others, so the account features read outside the spine
    shared = everyone[everyone["account__contacts"] > 1]
    chosen = sorted(shared["contact_id"].drop_duplicates().head(4)) + [everyone["contact_id"].iloc[-1]]
    few = model_features(con, spine_from_frame(con, pd.DataFrame(
        {"contact_id": chosen, "as_of": [as_of] * len(chosen)})), scorer)
    expected = everyone[everyone["contact_id"].isin(chosen)].reset_index(drop=True)
    assert len(few) == len(chosen) == len(expected)
    assert (few["account__contacts"].head(4) > 1).all()
    pdt.assert_frame_equal(few, expected, check_exact=False, rtol=1e-12)


def test_the_feature_frame_through_arrow_is_the_frame_ibis_executes(world, as_of):
    """Same values, dtypes and NULLs (columns with NULLs included) as ``execute``, which
    `score --model` and `explain` used before."""
    scorer = world.result.scorer
    con = world.ws.ibis_connection()
    spine = spine_at(con.table("events"), as_of, contacts=con.table("contacts"))
    expr = features_as_trained(con.table("events"), spine, scorer, con.table("contacts"))
    keys = ["contact_id", "as_of"]
    executed = expr.execute().sort_values(keys).reset_index(drop=True)
    through_arrow = features_frame(expr).sort_values(keys).reset_index(drop=True)
    assert executed.isna().any().sum() > 5  # the columns whose conversion differs
    pdt.assert_frame_equal(through_arrow.isna(), executed.isna())
    # dtypes exact; values to the last bits, which parallel SQL sums vary between two runs
    pdt.assert_frame_equal(through_arrow, executed, check_exact=False, rtol=1e-12)
