"""The compare config: the shipped file loads; typos and bad values fail naming file and key."""

from pathlib import Path

import pytest

from propensity.pipelines.compare import CompareConfigError, load_compare_config, parse_k_list
from propensity.pipelines.compare.evaluation import _split_mismatch
from propensity.pipelines.training.config import TrainConfig
from propensity.pipelines.training.run_logging import flatten

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def test_the_shipped_compare_config_loads():
    config = load_compare_config(CONFIGS / "compare.yaml")
    assert config.top_k_percent == (5.0, 10.0, 20.0) and config.backtest.last_n >= 1


def test_an_unknown_key_fails_naming_the_file_and_the_key(tmp_path):
    bad = tmp_path / "compare.yaml"
    bad.write_text("top_k_percent: [5]\nbacktest: {last_m: 2}\n")
    with pytest.raises(CompareConfigError, match=r"compare\.yaml: invalid compare config: backtest\.last_m"):
        load_compare_config(bad)


def test_k_list_parsing_sorts_and_refuses_nonsense():
    assert parse_k_list("20,5, 10") == (5.0, 10.0, 20.0)
    with pytest.raises(ValueError, match="--k 'five'"):
        parse_k_list("five")
    with pytest.raises(ValueError, match=r"\(0, 100\]"):
        parse_k_list("0,10")


def test_a_model_trained_on_another_grid_or_horizon_is_flagged_and_the_same_one_is_not():
    trained = TrainConfig(rules="r.yaml", grid={"first": "2025-02-01", "last": "2025-05-01", "step_days": 14})
    params = flatten(trained.model_dump(mode="json"))  # what training logs to MLflow
    assert _split_mismatch(trained, params) == []
    now = trained.model_copy(update={"horizon_days": 14.0})
    assert _split_mismatch(now, params) == ["horizon_days: model '30.0', now '14.0'"]
    moved = TrainConfig(rules="other.yaml", grid={"first": "2025-02-08", "last": "2025-05-01", "step_days": 14})
    assert [m.split(":")[0] for m in _split_mismatch(moved, params)] == ["grid.first"]
