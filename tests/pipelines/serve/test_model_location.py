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
