"""Every shipped YAML loads with the model that owns it (an invalid one is shown to fail elsewhere)."""

from pathlib import Path

import pytest

from propensity.features.config import load_feature_config
from propensity.features.dataset import load_dataset_config
from propensity.pipelines.training.config import TrainConfigError, load_train_config

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


def test_relative_paths_in_a_training_config_resolve_against_its_own_folder(tmp_path, monkeypatch):
    (tmp_path / "cfg" / "rules").mkdir(parents=True)
    (tmp_path / "cfg" / "rules" / "mine.yaml").write_text("name: mine\n")
    (tmp_path / "cfg" / "train.yaml").write_text("rules: rules/mine.yaml\nspine: day60\n")
    monkeypatch.chdir(tmp_path)  # not the config's folder: the current folder must not matter
    assert load_train_config(tmp_path / "cfg" / "train.yaml").rules == tmp_path / "cfg" / "rules" / "mine.yaml"


def test_a_missing_path_in_a_training_config_names_the_file_and_the_key(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("rules: rules/saas.yaml\nfeatures: configs/features.yaml\nspine: day60\n")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "saas.yaml").write_text("name: saas\n")
    with pytest.raises(TrainConfigError, match=r"train\.yaml: features: 'configs/features.yaml' not found"):
        load_train_config(config)
