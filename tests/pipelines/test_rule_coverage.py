"""Rules that read nothing are named, with the closest event names the data has."""

from __future__ import annotations

import pandas as pd
import pytest

from propensity.features.store import Workspace, ingest_file
from propensity.pipelines.cli import main
from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.rules.coverage import unread_rules


@pytest.fixture()
def workspace(tmp_path):
    events = pd.DataFrame({
        "contact_id": ["a", "a", "b", "b", "c"],
        "event_type": ["Pricing Viewed", "Demo Requested", "Pricing Viewed", "page_view", "page_view"],
        "ts": pd.to_datetime(["2025-01-02", "2025-01-03", "2025-01-04", "2025-01-05", "2025-01-06"]),
        "properties": ['{"plan": "team"}', None, '{"plan": "team"}', None, None],
    })
    path = tmp_path / "events.csv"
    events.to_csv(path, index=False)
    ws = Workspace(tmp_path / "ws")
    ingest_file(ws, "events", path)
    return ws


def _rules(tmp_path, activities: list[dict]) -> RuleSet:
    import yaml

    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({
        "name": "mine", "activities": activities, "scale": {0: 0, 50: 5},
        "bands": [{"name": "cold", "min_score": 0}, {"name": "hot", "min_score": 3}],
    }))
    return path


def test_a_case_typo_is_named_with_the_closest_event_names(workspace, tmp_path):
    from propensity.pipelines.rules import load_rules

    rules = load_rules(_rules(tmp_path, [
        {"name": "pricing", "event": "pricing viewed", "points": 5},
        {"name": "demo", "event": "Demo Requested", "points": 50},
    ]))
    found = unread_rules(workspace.ibis_connection().table("events"), rules)
    assert [u.rule for u in found] == ["pricing"]
    assert found[0].closest[0] == ("Pricing Viewed", 2)
    assert "'Pricing Viewed' (2)" in found[0].message("mine")


def test_a_filter_that_matches_no_event_of_a_seen_type_says_so(workspace, tmp_path):
    from propensity.pipelines.rules import load_rules

    rules = load_rules(_rules(tmp_path, [
        {"name": "pricing_pro", "event": "Pricing Viewed", "where": {"plan": "pro"}, "points": 5},
        {"name": "pricing_team", "event": "Pricing Viewed", "where": {"plan": "team"}, "points": 5},
    ]))
    found = unread_rules(workspace.ibis_connection().table("events"), rules)
    assert [(u.rule, u.events_of_type) for u in found] == [("pricing_pro", 2)]
    assert "none passes its `where` filter" in found[0].message("mine")


def test_score_warns_on_stderr_and_still_scores(workspace, tmp_path, capsys):
    path = _rules(tmp_path, [{"name": "pricing", "event": "pricing viewed", "points": 5}])
    out = tmp_path / "scores.csv"
    assert main(["-w", str(workspace.path), "score", "--rules", str(path), "--as-of", "2025-02-01",
                 "--out", str(out)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "rule 'pricing' of 'mine' reads event 'pricing viewed', which no event has" in err
    assert "'Pricing Viewed' (2)" in err
    assert (pd.read_csv(out)["rule_score"] == 0).all()
