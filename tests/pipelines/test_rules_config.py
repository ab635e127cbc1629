from pathlib import Path

import pytest
import yaml

from propensity.pipelines.rules import RuleSet, RulesConfigError, dump_rules, load_rules

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "rules"
SHIPPED = sorted(CONFIGS.glob("*.yaml"))


def test_the_shipped_rule_files_are_the_three_the_project_promises():
    assert {p.stem for p in SHIPPED} >= {"saas", "edtech", "oulad"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_rules_file_loads_and_round_trips_through_yaml(path):
    rules = load_rules(path)
    assert rules.activities
    again = RuleSet.model_validate(yaml.safe_load(dump_rules(rules)))
    assert again == rules


def test_saas_defaults_carry_the_seed_table():
    rules = {a.name: a for a in load_rules(CONFIGS / "saas.yaml").activities}
    assert (rules["pricing_page"].points, rules["pricing_page"].weight) == (5, 1.0)
    assert (rules["free_trial_signup"].points, rules["free_trial_signup"].weight) == (50, 1.5)
    assert (rules["core_feature_used"].points, rules["core_feature_used"].weight) == (10, 1.2)
    assert (rules["demo_request"].points, rules["demo_request"].weight) == (75, 2.0)
    assert rules["unsubscribed"].points < 0


def _write(tmp_path, data) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _minimal(**overrides):
    data = {
        "name": "t",
        "activities": [{"name": "demo", "event": "demo_requested", "points": 10}],
        "scale": {0: 0, 100: 5},
        "bands": [{"name": "cold", "min_score": 0}, {"name": "hot", "min_score": 3}],
    }
    data.update(overrides)
    return data


def test_an_unknown_key_is_an_error_naming_the_file_and_the_key(tmp_path):
    data = _minimal(activities=[{"name": "demo", "event": "x", "points": 1, "half_life": 3}])
    path = _write(tmp_path, data)
    with pytest.raises(RulesConfigError, match=r"rules\.yaml.*half_life"):
        load_rules(path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"scale": {0: 5, 100: 0}}, "monotone"),
        ({"scale": {0: 0}}, "two anchor"),
        ({"bands": [{"name": "warm", "min_score": 1}]}, "start at min_score 0"),
        ({"activities": [{"name": "Demo Request", "event": "x", "points": 1}]}, "snake_case"),
        ({"activities": [{"name": "a", "event": "x", "points": 1, "half_life_days": 0}]}, "greater than 0"),
        ({"fit": [{"name": "f", "attribute": "size", "points": 1}]}, "exactly one"),
        ({"fit": [{"name": "f", "attribute": "size", "points": 1, "min": 5, "max": 1}]}, "min must be below max"),
        ({"activities": [{"name": "a", "event": "x", "points": 1}, {"name": "a", "event": "y", "points": 2}]}, "unique"),
        ({"rollup": {"method": "max", "count_band": "nope"}}, "count_band"),
    ],
)
def test_invalid_rules_fail_with_a_message_that_says_why(tmp_path, overrides, message):
    with pytest.raises(RulesConfigError, match=message):
        load_rules(_write(tmp_path, _minimal(**overrides)))


def test_a_missing_rules_file_is_reported_by_name(tmp_path):
    with pytest.raises(RulesConfigError, match="nope.yaml: rules file not found"):
        load_rules(tmp_path / "nope.yaml")
