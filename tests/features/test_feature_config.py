"""FeatureConfig and load_feature_config: the shipped file loads, mistakes fail loudly."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from propensity.features.config import FeatureConfig, FeatureConfigError, load_feature_config

SHIPPED = Path(__file__).resolve().parents[2] / "configs" / "features.yaml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "my_features.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_features_yaml_loads():
    config = load_feature_config(SHIPPED)
    assert isinstance(config, FeatureConfig)
    assert config.windows_days == config.half_lives_days == config.monetary_types == "auto"
    assert config.active_days_windows is None and not config.is_resolved


def test_none_gives_the_defaults():
    assert load_feature_config(None) == FeatureConfig()


def test_an_empty_file_gives_the_defaults(tmp_path):
    assert load_feature_config(_write(tmp_path, "# nothing set\n")) == FeatureConfig()


def test_lists_become_tuples_and_the_config_is_frozen(tmp_path):
    config = load_feature_config(
        _write(tmp_path, "windows_days: [1, 14]\nevent_types: [a, b]\nvalue_weighted_types: [b]\n")
    )
    assert config.windows_days == (1, 14)
    assert config.event_types == ("a", "b")
    with pytest.raises(pydantic.ValidationError):
        config.windows_days = (3,)


def test_unknown_keys_raise_with_the_file_name(tmp_path):
    path = _write(tmp_path, "windows_days: [7]\nwindow_days: [30]\n")
    with pytest.raises(FeatureConfigError, match=r"my_features\.yaml") as info:
        load_feature_config(path)
    assert "window_days" in str(info.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("windows_days: [7, -30]\n", "positive"),
        ("windows_days: []\n", "windows_days"),
        ("windows_days: [7, 7]\n", "duplicates"),
        ("windows_days: [7.5]\n", "windows_days"),
        ("half_lives_days: [0]\n", "positive"),
        ("active_days_windows: [0]\n", "positive"),
        ("momentum_days: 0\n", "momentum_days"),
        ("max_event_types: 0\n", "max_event_types"),
        ("event_types: [a, '']\n", "non-empty"),
        ("event_types: [a]\nvalue_weighted_types: [b]\n", "not in event_types"),
        ("account_features: maybe\n", "account_features"),
    ],
)
def test_invalid_values_raise_with_the_file_name(tmp_path, text, fragment):
    path = _write(tmp_path, text)
    with pytest.raises(FeatureConfigError, match=r"my_features\.yaml") as info:
        load_feature_config(path)
    assert fragment in str(info.value)


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path):
    with pytest.raises(FeatureConfigError, match=r"my_features\.yaml.*mapping"):
        load_feature_config(_write(tmp_path, "- 7\n- 30\n"))


def test_broken_yaml_and_missing_files_name_the_file(tmp_path):
    with pytest.raises(FeatureConfigError, match=r"my_features\.yaml"):
        load_feature_config(_write(tmp_path, "windows_days: [7, 30\n"))
    with pytest.raises(FeatureConfigError, match=r"absent\.yaml"):
        load_feature_config(tmp_path / "absent.yaml")


def test_auto_is_accepted_only_as_the_whole_value(tmp_path):
    config = load_feature_config(_write(tmp_path, "windows_days: auto\nhalf_lives_days: auto\n"))
    assert config.windows_days == "auto" and config.half_lives_days == "auto"
    assert not config.is_resolved
    with pytest.raises(FeatureConfigError, match="windows_days"):
        load_feature_config(_write(tmp_path, "windows_days: automatic\n"))
    with pytest.raises(FeatureConfigError, match="at least one window"):
        load_feature_config(_write(tmp_path, "windows_days: []\n"))
    with pytest.raises(FeatureConfigError, match=r"monetary_types not in event_types: \['x'\]"):
        load_feature_config(_write(tmp_path, "event_types: [a]\nmonetary_types: [x]\n"))


def test_a_model_recorded_before_the_new_families_reads_them_as_off():
    recorded = {k: v for k, v in FeatureConfig(monetary_types=("buy",)).model_dump(mode="json").items()
                if k not in ("lifetime_features", "trend_features", "monetary_types")}
    old = FeatureConfig.of_model(recorded)
    assert (old.lifetime_features, old.trend_features, old.monetary_types) == (False, False, ())
    assert old.is_resolved
    new = FeatureConfig(monetary_types=("buy",))
    assert FeatureConfig.of_model(new.model_dump(mode="json")) == new  # a new record round-trips
