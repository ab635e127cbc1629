"""The application layer's one rule for which file a command uses (given > model > workspace > shipped)."""

from __future__ import annotations

import pytest

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
