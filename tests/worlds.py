"""One small synthetic world with a registered learned model, shared by the explain, tune, compare
and model-portability tests.

Built once per test session (the ``world`` fixture of tests/conftest.py calls :func:`trained_world`
with the session's ``tmp_path_factory``, and the result is cached), because training is the slow part.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class TrainedWorld:
    ws: object  # propensity.features.store.Workspace
    config_path: Path
    config: object  # TrainConfig
    result: object  # TrainResult (scorer, test_scores)
    model_name: str
    version: str  # the registered version (it may not beat the rules on so little data: no champion)


_CACHE: dict[int, TrainedWorld] = {}


def trained_world(tmp_path_factory) -> TrainedWorld:
    """The session's world (built on first use; the factory is one object per session)."""
    key = id(tmp_path_factory)
    if key not in _CACHE:
        _CACHE[key] = _build(tmp_path_factory)
    return _CACHE[key]


def _build(tmp_path_factory) -> TrainedWorld:
    from propensity.features.store import Workspace, ingest_file
    from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world
    from propensity.pipelines.training.config import load_train_config
    from propensity.pipelines.training.train import train

    data = tmp_path_factory.mktemp("explain_world")
    world = generate_world(WorldConfig(contacts=2500, days=150, seed=5))
    paths = write_world(world, data, fmt="parquet")
    ws = Workspace(tmp_path_factory.mktemp("explain_ws"))
    for kind in ("contacts", "events", "outcomes"):
        ingest_file(ws, kind, paths[kind])
    model_name = "propensity-explain-test"
    config = {
        "rules": str(ROOT / "configs/rules/saas.yaml"),
        "features": str(ROOT / "configs/features.yaml"),
        "grid": {"first": "2025-01-15", "last": "2025-04-25", "step_days": 10},
        "horizon_days": 21,
        "model": {"tune": False, "n_trials": 1, "timeout_seconds": 900, "seed": 0},
        "min_positives": 20,
        "points_only_below": 20,
        "mlflow": {"experiment": "explain-test", "model_name": model_name},
    }
    config_path = data / "train.yaml"
    config_path.write_text(yaml.safe_dump(config))
    train_config = load_train_config(config_path)
    result = train(ws, train_config)
    assert result.scorer is not None and result.model_version, "the test world needs a registered model"
    return TrainedWorld(ws=ws, config_path=config_path, config=train_config, result=result, model_name=model_name,
                        version=str(result.model_version))
