"""The application layer's one rule for which file a command uses (given > model > workspace > shipped)."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import yaml

from propensity.pipelines.jobs import WorkspaceError
from propensity.pipelines.project import Project
from propensity.pipelines.shipped import shipped_config


def test_a_new_workspace_uses_the_shipped_configs_and_says_so(tmp_path):
    project = Project(tmp_path / "ws")
    where = project.rules_path()
    assert where.path == shipped_config("rules/saas.yaml") and where.is_shipped
    assert "shipped with the package" in where.describe("rules")
    config, where = project.train_config()
    assert where.path == shipped_config("train.yaml") and config.rules.name == "saas.yaml"


def test_the_workspace_copies_win_over_the_shipped_ones_and_a_given_file_over_both(tmp_path):
    ws = tmp_path / "ws"
    (ws / "configs").mkdir(parents=True)
    own = ws / "configs" / "rules.yaml"
    own.write_text(shipped_config("rules/saas.yaml").read_text())
    project = Project(ws)
    assert project.rules_path().path == own and project.rules_path().source == "workspace"
    given = tmp_path / "mine.yaml"
    given.write_text(own.read_text())
    assert project.rules_path(given).path == given and project.rules_path(given).source == "given"
    assert "given on the command line" in project.rules_path(given).describe("rules")


def test_no_model_in_a_workspace_that_never_trained_is_a_message_that_says_what_to_run(tmp_path):
    project = Project(tmp_path / "ws")
    assert project.find_model("champion") is None
    with pytest.raises(WorkspaceError, match="run `propensity train` first"):
        project.model("champion")
    assert project.learned_rules_path() is None


def test_rule_warnings_are_empty_without_events(tmp_path):
    project = Project(tmp_path / "ws")
    rules, _, warnings = project.rules()
    assert rules.name == "saas" and warnings == []


@pytest.mark.slow
def test_score_with_a_model_reads_the_registry_the_train_config_names(world, tmp_path):
    """`mlflow.tracking_uri` in the workspace's train.yaml is where `score --model` finds the model
    (it used to look in the workspace's own, empty store)."""
    from propensity.pipelines.cli import main

    other = Project(tmp_path / "ws")
    for kind in ("contacts", "events", "outcomes"):
        other.ingest(kind, world.config_path.parent / f"{kind}.parquet")
    shared = yaml.safe_load(world.config_path.read_text())
    shared["mlflow"]["tracking_uri"] = f"sqlite:///{world.ws.path / 'mlflow.db'}"
    (other.path / "configs").mkdir()
    (other.path / "configs" / "train.yaml").write_text(yaml.safe_dump(shared))

    as_of = pd.Timestamp(world.result.test_scores["as_of"].iloc[0])
    scored = other.score_with_model(as_of, world.version)
    expected = Project(world.ws).score_with_model(as_of, world.version, world.model_name)
    pd.testing.assert_frame_equal(scored, expected)
    assert not (other.path / "mlflow.db").exists(), "nothing may be looked up in the workspace's own store"
    out = tmp_path / "scores.csv"
    assert main(["-w", str(other.path), "score", "--model", world.version, "--as-of", f"{as_of:%Y-%m-%d}",
                 "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == len(expected)


def test_everything_a_trained_workspace_holds_is_named_by_its_layout(world):
    from propensity.features.layout import WorkspaceLayout

    layout = world.ws.layout
    named = {getattr(layout, name).name for name in dir(WorkspaceLayout)
             if isinstance(getattr(WorkspaceLayout, name), property)}
    held = {p.name for p in world.ws.path.iterdir() if not p.name.endswith((".wal", ".tmp"))}
    assert held and held <= named, held - named
    assert layout.learned_rules.is_file() and layout.mlflow_db.is_file() and layout.database.is_file()
    assert layout.model_context(world.model_name, world.version).is_dir()


@pytest.mark.slow
def test_an_alias_nobody_set_names_the_versions_that_exist_instead_of_sending_back_to_train(world):
    # `train` registers a model that does not beat the rules without an alias: "run train first"
    # would send the user round in a circle, so the message names the versions to pass instead
    project = Project(world.ws)
    with pytest.raises(WorkspaceError) as raised:
        project.model("challenger", world.model_name)
    message = str(raised.value)
    assert re.search(rf"versions? [0-9, ]*\b{world.version}\b[0-9, ]* registered", message), message
    assert f"--model {world.version}" in message and "run `propensity train` first" not in message


@pytest.mark.slow
def test_compare_without_the_alias_names_the_version_it_could_compare(world):
    from propensity.pipelines.compare.evaluation import _other_versions

    hint = _other_versions(world.ws, world.config, "challenger", world.model_name)
    assert f"`propensity compare --model {world.version}`" in hint
    assert _other_versions(world.ws, world.config, world.version, world.model_name) == ""


@pytest.mark.slow
def test_info_names_the_events_span_and_the_registered_versions_and_aliases(world):
    facts = Project(world.ws).info()
    events = world.ws.ibis_connection().table("events").execute()
    assert facts["tables"]["events"] == len(events)
    assert facts["events"]["event_types"] == events["event_type"].nunique()
    assert pd.Timestamp(facts["events"]["last"]) == events["ts"].max()
    model = facts["models"][world.model_name]
    assert int(world.version) in model["versions"]
    assert set(model["aliases"].values()) <= set(model["versions"])


def test_info_of_an_empty_workspace_has_no_events_or_models(tmp_path):
    facts = Project(tmp_path / "ws").info()
    assert facts["tables"] == {} and "events" not in facts and "models" not in facts
