"""The leakage guard on real data: OULAD's withdrawal date must be caught if someone maps it in."""

from pathlib import Path

import duckdb
import pytest

from propensity.features.dataset import load_dataset_config, render_sql
from propensity.pipelines.training.leakage import LeakageConfig, LeakageError, check_leakage, raise_for_leakage
from propensity.pipelines.training.model import prepare_matrix

ROOT = Path(__file__).resolve().parents[3]
OULAD = ROOT.parent / "shared" / "data" / "oulad"
pytestmark = [
    pytest.mark.oulad,
    pytest.mark.skipif(not OULAD.exists(), reason=f"OULAD data not found at {OULAD} (needs ../shared)"),
]


@pytest.fixture(scope="module")
def leaky_training_frame():
    config = load_dataset_config(ROOT / "configs" / "datasets" / "oulad_leaky.yaml")
    con = duckdb.connect()
    contacts = con.execute(render_sql(config.contacts, OULAD)).df()
    passed = set(con.execute(render_sql(config.outcomes, OULAD)).df()["contact_id"])
    contacts["label"] = contacts["contact_id"].isin(passed).astype("int64")
    return contacts


def test_the_leaky_withdrawal_column_is_flagged_by_name_and_by_its_auc(leaky_training_frame):
    frame = leaky_training_frame
    columns = ["days_to_unregistration", "num_of_prev_attempts", "studied_credits", "highest_education"]
    X, _ = prepare_matrix(frame, columns)
    report = check_leakage(X, frame["label"].to_numpy(), LeakageConfig())
    suspects = report.suspects.set_index("feature")
    assert list(suspects.index) == ["days_to_unregistration"]
    assert "unregist" in suspects.loc["days_to_unregistration", "reason"]
    with pytest.raises(LeakageError, match="days_to_unregistration"):
        raise_for_leakage(report)


def test_honest_oulad_attributes_pass_the_guard(leaky_training_frame):
    frame = leaky_training_frame
    columns = ["num_of_prev_attempts", "studied_credits", "highest_education", "imd_band", "age_band"]
    X, _ = prepare_matrix(frame, columns)
    report = check_leakage(X, frame["label"].to_numpy(), LeakageConfig())
    assert report.suspects.empty
    raise_for_leakage(report)  # does not raise
