"""Must show (issue 16): on a world whose truth changes at a known date, `monitor` alerts within
two cut-offs of the change and names the rule and the drifting features; before the change it
raises no alert on three quiet cut-offs. Also: a later run appends the new cut-offs and reads the
closed ones from the history.

The world (pipelines/synthetic/shift.py): from 2025-05-10 a new event type `integration_connected`
carries a strong hidden weight, and `teammate_invited` stops mattering (the product invites for
everyone). Data arrive in three drops, as in production: the champion is trained on the first,
the monitor runs after the second and again after the third.
"""

from pathlib import Path

import pandas as pd
import pytest
import yaml

from propensity.features.store import Workspace, ingest_file
from propensity.pipelines.monitor.config import MonitorConfig
from propensity.pipelines.monitor.jobs import MonitorInputs, run_monitor
from propensity.pipelines.rules.config import load_rules
from propensity.pipelines.synthetic import WorldConfig
from propensity.pipelines.synthetic.shift import ShiftConfig, generate_shifted_world
from propensity.pipelines.training.config import load_train_config
from propensity.pipelines.training.train import train

ROOT = Path(__file__).resolve().parents[3]
WORLD = WorldConfig(contacts=2500, days=151, seed=7, preexisting_share=1.0)
SHIFT = ShiftConfig(change_day=129)
CHANGE = SHIFT.change_date(WORLD)  # 2025-05-10
DROPS = (pd.Timestamp("2025-04-19"), pd.Timestamp("2025-05-10"))  # the training data end, the first monitor run


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shifted")
    world = generate_shifted_world(WORLD, SHIFT)
    ws = Workspace(folder / "ws")
    world.contacts.to_parquet(folder / "contacts.parquet")
    ingest_file(ws, "contacts", folder / "contacts.parquet")

    def drop(number: int) -> None:
        bounds = (pd.Timestamp.min, *DROPS, pd.Timestamp.max)
        for kind in ("events", "outcomes"):
            frame = getattr(world, kind)
            path = folder / f"{kind}_{number}.parquet"
            frame[(frame["ts"] >= bounds[number]) & (frame["ts"] < bounds[number + 1])].to_parquet(path)
            ingest_file(ws, kind, path)

    drop(0)
    # without the lifetime family: its all-history counts grow with the data's own age in a world
    # that starts on a given day, and a model built on them drifts without the truth changing
    features = yaml.safe_load((ROOT / "configs/features.yaml").read_text()) | {"lifetime_features": False}
    (folder / "features.yaml").write_text(yaml.safe_dump(features))
    config = {"rules": str(ROOT / "configs/rules/saas.yaml"), "features": str(folder / "features.yaml"),
              "grid": {"first": "2025-03-01", "last": "2025-04-05", "step_days": 7}, "horizon_days": 14,
              "model": {"tune": False, "n_trials": 1, "timeout_seconds": 900, "seed": 0},
              "min_positives": 20, "points_only_below": 20,
              "mlflow": {"experiment": "monitor-shift", "model_name": "propensity-monitor-shift"}}
    (folder / "train.yaml").write_text(yaml.safe_dump(config))
    train_config = load_train_config(folder / "train.yaml")
    trained = train(ws, train_config, track=False)
    inputs = MonitorInputs(train_config=train_config, rules=load_rules(train_config.rules),
                           rules_path=Path(train_config.rules), points=trained.learned_rules,
                           points_path=trained.learned_rules_path, scorer=trained.scorer, model_label="test scorer")
    drop(1)
    first = run_monitor(ws, inputs, MonitorConfig())
    drop(2)
    second = run_monitor(ws, inputs, MonitorConfig())
    return trained, first, second


def test_the_champion_never_saw_the_new_event_type(monitored):
    trained, _, _ = monitored
    assert "integration_connected" not in trained.scorer.event_types
    assert "teammate_invited" in trained.scorer.event_types


def test_three_quiet_cutoffs_before_the_change_raise_no_alert(monitored):
    _, _, result = monitored
    quiet = [c["as_of"] for c in result.cutoffs if pd.Timestamp(c["label_end"]) <= CHANGE]
    assert len(quiet) >= 3
    assert [a.to_dict() for a in result.alerts if a.as_of in quiet] == []


def test_the_open_cutoff_at_the_change_sees_no_change_yet_and_later_the_open_one_does(monitored):
    _, first, second = monitored
    # the first run's data end at the change: its latest cut-off is open (labels due) and its
    # features hold no event of the new truth (ts < as_of)
    assert first.open_cutoff["as_of"] == CHANGE.strftime("%Y-%m-%dT%H:%M:%S")
    said = " ".join(a.reason for a in first.alerts if a.as_of == first.open_cutoff["as_of"])
    assert "teammate_invited" not in said and "integration_connected" not in said
    later = [a for a in second.latest_alerts if a.as_of == second.open_cutoff["as_of"]]
    assert any(a.subject == "teammate_invited:coverage" for a in later)


def test_within_two_cutoffs_of_the_change_it_names_the_rule_the_drifting_features_and_the_new_event(monitored):
    _, _, result = monitored
    after = [c["as_of"] for c in result.cutoffs if pd.Timestamp(c["as_of"]) >= CHANGE][:2]
    assert len(after) == 2
    alerts = [a for a in result.alerts if a.as_of in after]
    rules = {a.subject.split(":")[0] for a in alerts if a.kind == "rule"}
    assert "teammate_invited" in rules
    assert all(a.action == "rules review" for a in alerts if a.kind == "rule")
    drifting = [f for a in alerts if a.kind == "drift" and a.subject == "features" for f in a.values["features"]]
    assert any(f.startswith("teammate_invited__") for f in drifting)
    assert not any(f.startswith(("tenure", "integration_connected")) for f in drifting)
    assert any(a.subject == "appeared:integration_connected" for a in alerts)
    assert result.latest_alerts, "the exit code and webhooks report the latest cut-off's alerts"


def test_a_later_run_appends_the_new_cutoffs_and_reads_the_closed_ones(monitored):
    _, first, second = monitored
    assert first.computed and first.reused == []
    assert second.reused == first.computed
    assert set(second.computed).isdisjoint(first.computed) and second.computed
    assert [c["as_of"] for c in second.cutoffs] == sorted(first.computed + second.computed)
    # what was read back is what was measured
    assert second.series["cutoffs"][first.computed[0]] == first.series["cutoffs"][first.computed[0]]
