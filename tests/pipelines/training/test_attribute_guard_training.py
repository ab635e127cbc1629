"""`propensity train` leaves identifier-like contacts columns out of the model, says which, and
keeps one when the feature config includes it (real workspace, DuckDB, LightGBM)."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

from propensity.features.store import Workspace, ingest_file
from propensity.pipelines.cli import main
from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world
from propensity.pipelines.training.config import load_train_config
from propensity.pipelines.training.train import train

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    data = tmp_path_factory.mktemp("world")
    world = generate_world(WorldConfig(contacts=1500, days=120, seed=5))
    paths = write_world(world, data, fmt="parquet")
    contacts = pd.read_parquet(paths["contacts"])
    # a CRM export: an email and the CRM's object type beside the real attributes (industry, ...)
    contacts["email"] = [f"{c}@example.com" for c in contacts["contact_id"]]
    contacts["salesforce_object"] = ["Contact" if i % 3 == 0 else "Lead" for i in range(len(contacts))]
    contacts.to_parquet(paths["contacts"], index=False)
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    for kind in ("contacts", "events", "outcomes"):
        ingest_file(ws, kind, paths[kind])
    return ws


def _config(tmp_path, features: dict | None = None) -> Path:
    feature_path = tmp_path / "features.yaml"
    shipped = yaml.safe_load((ROOT / "configs/features.yaml").read_text())
    feature_path.write_text(yaml.safe_dump({**shipped, "windows_days": [7, 30], "half_lives_days": [7.0],
                                            **(features or {})}))
    data = {
        "rules": str(ROOT / "configs/rules/saas.yaml"), "features": str(feature_path),
        "grid": {"first": "2025-01-14", "last": "2025-04-01", "step_days": 7}, "horizon_days": 30,
        "model": {"tune": False, "seed": 0, "max_estimators": 50}, "min_positives": 5, "points_only_below": 5,
        "mlflow": {"experiment": "guard-test", "model_name": "propensity-guard-test"},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_model_does_not_see_email_or_the_crm_object_type_and_the_output_names_them(workspace, tmp_path, capsys):
    config = _config(tmp_path)
    result = train(workspace, load_train_config(config), track=False)
    features = set(result.scorer.feature_names)
    assert {"industry", "country", "plan_interest"} <= features
    assert not {"email", "salesforce_object"} & features
    attributes = result.summary["attributes"]
    assert set(attributes["dropped"]) == {"email", "salesforce_object"}
    # the model records the columns it was given, so scoring reads exactly these
    assert "email" not in result.scorer.feature_config["attributes"]["columns"]

    assert main(["-w", str(workspace.path), "train", "--config", str(config), "--no-track"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "contacts columns not used as features, they look like identifiers:" in said
    assert "email (name: an email address)" in said and "salesforce_object (name: a CRM field)" in said
    # the attributes of each cut-off are those valid then (the workspace's attribute history), and it says so
    assert result.summary["attributes"]["values"].startswith("attribute values: as they were at each row's as_of")
    assert "attribute values: as they were at each row's as_of" in said


def test_an_explicit_include_puts_the_column_back(workspace, tmp_path):
    config = _config(tmp_path, {"attributes": {"include": ["salesforce_object"]}})
    result = train(workspace, load_train_config(config), track=False)
    assert "salesforce_object" in result.scorer.feature_names
    assert "email" not in result.scorer.feature_names
    assert result.summary["attributes"]["included"] == ["salesforce_object"]
