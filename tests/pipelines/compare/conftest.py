"""One tiny trained workspace for every compare test that needs the real pipeline (session-scoped:
generating, ingesting and training are the slow part)."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def trained_workspace(tmp_path_factory):
    """``(workspace, train config path, TrainResult)``: 2,000 synthetic contacts, a registered model."""
    from propensity.features.store import Workspace, ingest_file
    from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world
    from propensity.pipelines.training.config import load_train_config
    from propensity.pipelines.training.train import train

    base = tmp_path_factory.mktemp("compare")
    world = generate_world(WorldConfig(contacts=2000, days=150, seed=11))
    paths = write_world(world, base / "data", fmt="parquet")
    ws = Workspace(base / "ws")
    for kind in ("contacts", "events", "outcomes"):
        ingest_file(ws, kind, paths[kind])
    config = {
        "rules": str(ROOT / "configs/rules/saas.yaml"),
        "features": str(ROOT / "configs/features.yaml"),
        "grid": {"first": "2025-02-01", "last": "2025-05-01", "step_days": 14},
        "horizon_days": 14,
        # few, early-stopped rounds: the tests check that numbers agree, not that the model is good
        "model": {"tune": False, "n_trials": 1, "timeout_seconds": 900, "seed": 0,
                  "early_stopping_rounds": 10, "max_estimators": 150},
        "min_positives": 15,
        "points_only_below": 20,
        "mlflow": {"experiment": "compare-test", "model_name": "propensity-compare-test"},
    }
    config_path = base / "train.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = train(ws, load_train_config(config_path))
    return ws, config_path, result
