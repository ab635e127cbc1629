"""``serve`` unpickles the champion: only from this workspace's own MLflow store unless told (issue 15, item 13)."""

from __future__ import annotations

import shutil

import pytest

from propensity.pipelines.project import Project
from propensity.pipelines.serve.config import ServeConfig
from propensity.pipelines.training.registry import (
    ModelLocationError,
    check_model_location,
)
from tests.pipelines.serve.test_learned import _register_champion, random_world


def test_a_location_outside_the_workspace_artifacts_is_refused(tmp_path):
    ws = tmp_path / "ws"
    (ws / "mlartifacts" / "propensity").mkdir(parents=True)
    check_model_location((ws / "mlartifacts" / "propensity" / "m1").as_uri(), ws)
    (tmp_path / "elsewhere").mkdir()
    (ws / "mlartifacts" / "link").symlink_to(tmp_path / "elsewhere")
    for outside in [(tmp_path / "other" / "mlartifacts" / "m1").as_uri(), "s3://bucket/models/m1",
                    (ws / "mlartifacts" / ".." / "stolen").as_uri(), (ws / "mlartifacts" / "link" / "m1").as_uri(),
                    "http://models.example.com/m1"]:
        with pytest.raises(ModelLocationError, match="allow_external_model: true"):
            check_model_location(outside, ws)
    assert ServeConfig().allow_external_model is False


@pytest.mark.slow
def test_a_registry_pointing_at_another_workspace_is_refused_unless_allowed(tmp_path, capsys, monkeypatch):
    from propensity.pipelines.cli import main

    trained = tmp_path / "trained"
    events, contacts = random_world(3, n_events=300, n_contacts=20)
    _register_champion(trained, events, contacts)
    assert Project(trained).model("champion", "propensity", trusted_only=True).scorer  # its own store: served
    # a workspace whose registry (a copied mlflow.db) names artifacts in the other workspace
    copied = tmp_path / "copied"
    copied.mkdir()
    shutil.copy(trained / "mlflow.db", copied / "mlflow.db")
    with pytest.raises(ModelLocationError) as refused:
        Project(copied).model("champion", "propensity", trusted_only=True)
    assert str(trained / "mlartifacts") in str(refused.value) and "propensity@champion v1" in str(refused.value)
    allowed = Project(copied).model("champion", "propensity")  # allow_external_model: true
    assert allowed.version == "1" and allowed.scorer.feature_names
    # the CLI: a clear message and rc 2, before the service starts
    monkeypatch.setenv("PROPENSITY_WRITE_KEYS", "k1")
    assert main(["--workspace", str(copied), "serve", "--port", "1"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "outside this workspace's MLflow store" in err and "allow_external_model" in err



@pytest.mark.slow
def test_serve_falls_back_to_rules_only_for_a_champion_it_cannot_score_live_and_says_why(tmp_path, capsys):
    import dataclasses
    from datetime import timedelta

    import mlflow
    from mlflow.tracking import MlflowClient

    from propensity.pipelines.cli.activation import _served_model
    from propensity.pipelines.errors import WorkspaceError
    from propensity.pipelines.training.tracking import log_scorer_model
    from tests.pipelines.serve.test_learned import START, batch_features

    ws = tmp_path / "ws"
    events, contacts = random_world(5, n_events=300, n_contacts=20)
    _register_champion(ws, events, contacts)
    project = Project(ws)
    scorer, label, _ = _served_model(project, "champion", "propensity", allow_external=False)
    assert label == "propensity@champion v1" and scorer.feature_names
    # version 2: a feature config left on `auto`, whose columns the service cannot know
    v1 = project.model("1", "propensity")
    unknown = dataclasses.replace(v1.scorer, feature_config={**v1.scorer.feature_config, "windows_days": "auto"})
    example = batch_features(events, contacts, START + timedelta(days=25))
    with mlflow.start_run():
        log_scorer_model(unknown, example, "propensity")
    MlflowClient().set_registered_model_alias("propensity", "champion", "2")
    fresh = Project(ws)
    assert _served_model(fresh, "champion", "propensity", allow_external=False) is None
    assert "propensity@champion v2 is not scored live" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(ValueError, match="auto"):  # asked for by name: an error
        _served_model(fresh, "2", "propensity", allow_external=False)
    assert _served_model(fresh, "none", "propensity", allow_external=False) is None
    with pytest.raises(WorkspaceError):
        _served_model(fresh, "7", "propensity", allow_external=False)
