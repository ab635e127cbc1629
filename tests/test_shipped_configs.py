"""Every shipped YAML loads with the model that owns it (an invalid one is shown to fail elsewhere)."""

from pathlib import Path

import pytest

from features.config import load_feature_config
from features.dataset import load_dataset_config
from pipelines.training.config import TrainConfigError, load_train_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("features*.yaml")), ids=lambda p: p.name)
def test_shipped_feature_configs_load(path):
    assert load_feature_config(path).windows_days


@pytest.mark.parametrize("path", sorted((CONFIGS / "datasets").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_dataset_configs_load(path):
    assert load_dataset_config(path).events


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("train*.yaml")), ids=lambda p: p.name)
def test_shipped_training_configs_load_and_point_at_real_files(path):
    config = load_train_config(path)
    assert config.rules.exists() and (config.features is None or config.features.exists())


def test_a_training_config_with_an_unknown_key_fails_naming_file_and_key(tmp_path):
    bad = tmp_path / "train.yaml"
    bad.write_text("rules: x.yaml\nspine: day60\nmodle: {tune: false}\n")
    with pytest.raises(TrainConfigError, match=r"train\.yaml: invalid training config: modle"):
        load_train_config(bad)


def test_a_training_config_needs_exactly_one_spine_source(tmp_path):
    bad = tmp_path / "train.yaml"
    bad.write_text("rules: x.yaml\n")
    with pytest.raises(TrainConfigError, match="exactly one of `grid`"):
        load_train_config(bad)
