"""The cut-offs `propensity train` uses and drops, on a real workspace (synthetic world, DuckDB).

The world covers 2025-01-01 .. 2025-04-30 (its last event late on the 30th), and the grid's last
cut-off, 2025-04-01, has a 30-day label window that closes at the midnight after the last day:
exactly the cut-off that used to vanish when data_end was the last event's own timestamp.
"""

from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml

from propensity.features.store import Workspace, ingest_file
from propensity.pipelines.cli import main
from propensity.pipelines.compare.evaluation import EvaluationData, labelled_rows
from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world
from propensity.pipelines.training.config import load_train_config
from propensity.pipelines.training.dataset import data_end_of
from propensity.pipelines.training.train import train


pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
LAST_CUTOFF = "2025-04-01"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    data = tmp_path_factory.mktemp("world")
    world = generate_world(WorldConfig(contacts=1500, days=120, seed=3))
    paths = write_world(world, data, fmt="parquet")
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    for kind in ("contacts", "events", "outcomes"):
        ingest_file(ws, kind, paths[kind])
    return ws


def _config(tmp_path, **overrides):
    data = {
        "rules": str(ROOT / "configs/rules/saas.yaml"),
        "features": str(ROOT / "configs/features.yaml"),
        "grid": {"first": "2025-01-14", "last": LAST_CUTOFF, "step_days": 7},
        "horizon_days": 30,
        "min_positives": 5,
        "points_only_below": 1_000_000,  # the points model only: these tests are about the rows
        "mlflow": {"experiment": "cutoffs-test", "model_name": "propensity-cutoffs-test"},
    }
    data.update(overrides)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines at the terminal width


def test_the_default_data_end_is_the_midnight_after_the_last_day_not_the_last_event(workspace):
    latest = workspace.ibis_connection().table("events").ts.max().execute()
    assert pd.Timestamp(latest).date() == datetime(2025, 4, 30).date() and pd.Timestamp(latest).hour > 0
    assert data_end_of(workspace.ibis_connection()) == datetime(2025, 5, 1)


def test_train_tests_on_the_last_grid_cutoff_and_prints_the_cutoffs_it_used(workspace, tmp_path, capsys):
    config = _config(tmp_path)
    result = train(workspace, load_train_config(config), track=False)
    assert result.cutoffs.used("test") == [datetime(2025, 4, 1)]
    assert set(result.test_scores["as_of"]) == {pd.Timestamp(LAST_CUTOFF)}
    assert result.cutoffs.data_end.source == "default"

    assert main(["-w", str(workspace.path), "train", "--config", str(config), "--no-track"]) == 0
    out = _flat(capsys.readouterr().out)
    assert "data_end 2025-05-01 00:00 (default: the midnight after the day of the latest event or outcome" in out
    assert "cut-offs used (30-day label windows): train 2025-01-14, 2025-01-21 (2); valid 2025-02-25; test 2025-04-01" in out
    assert "cut-offs 2025-01-28 .. 2025-03-25 (8) dropped: its label window would run into the next split" in out
    # the points model alone (this config's points_only_below), said with the numbers that decided it
    assert "in the train split, under points_only_below (1,000,000) in the train config, so no LightGBM" in out


def test_a_data_end_that_drops_the_last_cutoff_says_which_by_which_rule_and_what_keeps_it(workspace, tmp_path, capsys):
    config = _config(tmp_path, data_end="2025-04-30T12:00:00")
    assert main(["-w", str(workspace.path), "train", "--config", str(config), "--no-track"]) == 0
    out = _flat(capsys.readouterr().out)
    assert "test 2025-03-25" in out
    assert ("cut-off 2025-04-01 dropped: its label window closes after data_end (2025-05-01 00:00); "
            "data_end 2025-05-01 00:00 or later would keep it") in out


def test_compare_labels_the_same_cutoffs_as_train(workspace, tmp_path):
    labelled, data_end = labelled_rows(EvaluationData.from_workspace(workspace), load_train_config(_config(tmp_path)))
    assert data_end == datetime(2025, 5, 1)
    assert labelled["as_of"].max() == pd.Timestamp(LAST_CUTOFF)


def test_a_horizon_too_long_for_the_history_is_explained_and_the_offered_horizon_trains(workspace, tmp_path):
    config = load_train_config(_config(tmp_path, horizon_days=45))
    with pytest.raises(ValueError) as caught:
        train(workspace, config, track=False)
    message = str(caught.value)
    assert "a time split needs at least" not in message  # the old message, blind to the horizon
    assert "the train split would be empty with horizon_days 45" in message
    assert "45 days =" in message and "found none" in message
    offered = int(message.split("horizon_days: ")[1].split(" ")[0])
    result = train(workspace, config.model_copy(update={"horizon_days": float(offered)}), track=False)
    assert result.cutoffs.used("train") and result.cutoffs.used("test")
