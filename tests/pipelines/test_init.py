"""`propensity init` on data unlike the demo's: its own event names, repeat purchases, a horizon of
months, and an export that stops mid-afternoon."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from propensity.features.config import load_feature_config
from propensity.pipelines.cli import main
from propensity.pipelines.rules import load_rules
from propensity.pipelines.starter import DataProfile, EventTypeProfile, OutcomeProfile, plan_project
from propensity.pipelines.training.config import load_train_config

START = datetime(2024, 1, 1)
DAYS = 400
LAST_EVENT = START + timedelta(days=DAYS - 1, hours=14, minutes=37)  # the export stopped mid-day


def retail_world(customers: int = 600, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shoppers who browse, fill carts and order again and again; an order is an event and an outcome."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(customers):
        interest = rng.gamma(1.5, 1.0)
        day = rng.integers(0, 60)
        while day < DAYS - 1:
            ts = START + timedelta(days=int(day), seconds=int(rng.integers(0, 86_000)))
            rows.append((f"shopper-{c}", "Viewed Product", ts, 1.0))
            if rng.random() < 0.4 * min(interest, 2):
                rows.append((f"shopper-{c}", "Added To Cart", ts + timedelta(minutes=3), 1.0))
                if rng.random() < 0.5:
                    rows.append((f"shopper-{c}", "Order Completed", ts + timedelta(minutes=9),
                                 float(round(rng.gamma(2.0, 30.0), 2))))
            day += 1 + int(rng.exponential(12 / interest))
    rows.append(("shopper-0", "Viewed Product", LAST_EVENT, 1.0))
    events = pd.DataFrame(rows, columns=["customer", "name", "timestamp", "value"])
    orders = events[events["name"] == "Order Completed"]
    outcomes = pd.DataFrame({"contact_id": orders["customer"], "ts": orders["timestamp"],
                             "outcome": "purchase", "value": orders["value"]})
    return events, outcomes


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("retail")
    events, outcomes = retail_world()
    events.to_csv(folder / "clicks.csv", index=False)
    outcomes.to_parquet(folder / "orders.parquet")
    return folder


def _init(files, ws, *extra):
    return main(["-w", str(ws), "init", "--events", str(files / "clicks.csv"),
                 "--outcomes", str(files / "orders.parquet"),
                 "--map", "contact_id=customer", "--map", "event_type=name", "--map", "ts=timestamp", *extra])


def test_init_writes_configs_that_load_and_fit_the_data(files, tmp_path, capsys):
    assert _init(files, tmp_path / "ws", "--horizon", "90") == 0
    out = capsys.readouterr().out
    config = load_train_config(tmp_path / "ws" / "configs" / "train.yaml")
    rules = load_rules(config.rules)
    assert {a.event for a in rules.activities} == {"Viewed Product", "Added To Cart", "Order Completed"}
    assert config.recurring, "most buyers order more than once: outcomes recur"
    # the export stopped at 14:37 while the days before had events all day: the data ends the minute
    # after it, not at the next midnight (which would count the unseen rest of the day as no order)
    assert config.data_end == datetime(2025, 2, 3, 14, 38)
    assert "looks cut short at its latest event or outcome, 2025-02-03 14:37:00" in out
    assert config.horizon_days == 90
    assert config.grid.last + timedelta(days=90) <= config.data_end  # the test window closes in the data
    assert config.grid.last + timedelta(days=90 + config.grid.step_days) > config.data_end  # and it is the last that does
    features = load_feature_config(config.features)
    assert max(features.windows_days) >= 90 and "Order Completed" in features.value_weighted_types
    for split in ("train", "valid", "test"):
        assert f"│ {split}" in out  # the preview shows rows and positives for every split


def test_init_maps_the_contacts_and_outcomes_files_columns_too(files, tmp_path, capsys):
    """Each file keeps its own column names: --contacts-map and --outcomes-map, as --map for events."""
    import duckdb

    events, outcomes = retail_world()
    outcomes.rename(columns={"contact_id": "customer", "ts": "paid_at"}).to_csv(tmp_path / "orders.csv", index=False)
    people = pd.DataFrame({"customer": events["customer"].unique()}).assign(tier="gold")
    people.to_csv(tmp_path / "people.csv", index=False)
    args = ["-w", str(tmp_path / "ws"), "init", "--events", str(files / "clicks.csv"),
            "--map", "contact_id=customer", "--map", "event_type=name", "--map", "ts=timestamp",
            "--contacts", str(tmp_path / "people.csv"), "--outcomes", str(tmp_path / "orders.csv")]
    assert main(args) == 2
    assert "--map contact_id=<your column>" in capsys.readouterr().err  # the hint names the CLI's option
    assert main([*args, "--contacts-map", "contact_id=customer",
                 "--outcomes-map", "contact_id=customer", "--outcomes-map", "ts=paid_at"]) == 0
    with duckdb.connect(str(tmp_path / "ws" / "propensity.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM contacts").fetchone()[0] == len(people)
        assert con.execute("SELECT count(*) FROM outcomes").fetchone()[0] == len(outcomes)


def test_a_map_for_a_file_not_given_is_an_error(files, tmp_path, capsys):
    assert _init(files, tmp_path / "ws", "--contacts-map", "contact_id=customer") == 2
    assert "--contacts-map given without --contacts FILE" in capsys.readouterr().err


def test_commands_after_init_read_the_workspace_rules(files, tmp_path, capsys):
    assert _init(files, tmp_path / "ws", "--horizon", "90") == 0
    capsys.readouterr()
    assert main(["-w", str(tmp_path / "ws"), "score", "--as-of", "2024-10-01", "--out", str(tmp_path / "s.csv")]) == 0
    captured = capsys.readouterr()
    assert f"rules: {tmp_path / 'ws' / 'configs' / 'rules.yaml'} (the workspace's own" in captured.err
    assert "starter rule scores" in captured.out
    scored = pd.read_csv(tmp_path / "s.csv")
    assert "points__added_to_cart" in scored.columns


def test_a_horizon_the_data_cannot_judge_honestly_is_shortened_and_said(files, tmp_path, capsys):
    assert _init(files, tmp_path / "ws", "--horizon", "270") == 0
    captured = capsys.readouterr()
    assert "leaves no honest training cut-off" in captured.err
    config = load_train_config(tmp_path / "ws" / "configs" / "train.yaml")
    assert config.horizon_days < 270 and "NOTE:" in (tmp_path / "ws" / "configs" / "train.yaml").read_text()


def test_a_second_init_refuses_to_overwrite_the_reviewed_files(files, tmp_path, capsys):
    assert _init(files, tmp_path / "ws", "--horizon", "90") == 0
    rules = tmp_path / "ws" / "configs" / "rules.yaml"
    rules.write_text(rules.read_text().replace("points: 10", "points: 12", 1))
    assert _init(files, tmp_path / "ws", "--horizon", "90") == 2
    assert "already exists" in capsys.readouterr().err
    assert "points: 12" in rules.read_text()


def _profile(days: float, repeat: int = 0) -> DataProfile:
    first = datetime(2025, 1, 1)
    return DataProfile(
        contacts=100, events=1000, first_event=first, last_event=first + timedelta(days=days - 1, hours=5),
        last_outcome=None, event_types=(EventTypeProfile("visit", 1000, 100, 1.0, first, first, 1.0),),
        outcomes=(OutcomeProfile("won", 40, 30),), contacts_with_outcome=30, contacts_with_repeat_outcome=repeat,
        median_active_gap_days=3.0,
    )


def test_short_data_gets_a_contact_fraction_for_valid_instead_of_a_time_split():
    plan = plan_project(_profile(days=100), horizon_days=30)
    assert plan.split == {"test_cutoffs": 1, "valid_fraction": 0.2}
    assert plan.grid_last == datetime(2025, 4, 11) - timedelta(days=30)


def test_data_too_short_for_any_honest_cutoff_is_an_error_that_says_why():
    with pytest.raises(ValueError, match="leave no honest cut-off"):
        plan_project(_profile(days=15), horizon_days=30)


def test_one_time_conversions_stay_one_time():
    assert not plan_project(_profile(days=200, repeat=1), horizon_days=30).recurring


def test_the_workspace_option_works_after_the_command_name_and_info_lists_the_configs(files, tmp_path, capsys):
    import json

    assert _init(files, tmp_path / "ws", "--horizon", "90") == 0
    capsys.readouterr()
    assert main(["info", "--json", "-w", str(tmp_path / "ws")]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["tables"]["events"] == len(retail_world()[0]) and "configs/train.yaml" in facts["configs"]


@pytest.mark.slow
def test_a_new_user_goes_from_files_to_tuned_rules_without_editing_a_file(tmp_path_factory, capsys):
    """init -> train -> compare -> explain -> tune on the retail world, each with the workspace only."""
    import json

    folder = tmp_path_factory.mktemp("retail-big")
    events, outcomes = retail_world(customers=2500, seed=5)
    events.to_csv(folder / "clicks.csv", index=False)
    outcomes.to_parquet(folder / "orders.parquet")
    ws = tmp_path_factory.mktemp("ws-new-user")
    assert _init(folder, ws, "--horizon", "90") == 0
    config = load_train_config(ws / "configs" / "train.yaml")
    own_rules = load_rules(ws / "configs" / "rules.yaml")
    capsys.readouterr()

    assert main(["-w", str(ws), "train", "--json"]) == 0
    trained = capsys.readouterr()
    assert f"{ws / 'configs' / 'train.yaml'}" in trained.err  # it said which config it used
    run = json.loads(trained.out)
    assert run["summary"]["cutoffs"]["test"] == [f"{config.grid.last:%Y-%m-%d}"], \
        "the last grid cut-off is the test cut-off (its window closes in the data)"
    context = ws / "models" / "propensity" / "v1"
    assert load_rules(context / "rules.yaml") == own_rules
    carried = load_train_config(context / "train.yaml")
    assert carried.data_end == config.data_end and carried.grid == config.grid

    # compare, explain and tune take the model's context: an edited workspace config must not leak in
    (ws / "configs" / "train.yaml").write_text((ws / "configs" / "train.yaml").read_text()
                                               .replace(f"horizon_days: {config.horizon_days:g}", "horizon_days: 7"))
    out_dir = tmp_path_factory.mktemp("reports")
    assert main(["-w", str(ws), "compare", "--model", "1", "--out-dir", str(out_dir)]) == 0
    compared = capsys.readouterr()
    assert str(context / "train.yaml") in compared.err and str(context / "rules.learned.yaml") in compared.err
    report = json.loads((out_dir / "compare.json").read_text())
    assert report["meta"]["cutoffs"] == [f"{config.grid.last:%Y-%m-%d}"]
    summary = {row["model"]: row for row in report["summary"]}
    decision = run["registry"]
    gain = summary["learned"]["roc_auc"] - summary["rules"]["roc_auc"]
    assert decision["gain"] == pytest.approx(gain, abs=1e-9), "train and compare measure the same gain on the same rows"
    gap = [g for g in report["gaps"] if g["model"] == "learned"][0]
    assert decision["promoted"] == (gap["roc_auc_gap_low"] > 0), "compare confirms the champion decision"
    assert main(["-w", str(ws), "compare", "--model", "1", "--json", "--out-dir", str(out_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["summary"] == report["summary"]

    contact = str(events["customer"].iloc[0])
    assert main(["-w", str(ws), "explain", contact, "--model", "1", "--json"]) == 0
    explained = capsys.readouterr()
    payload = json.loads(explained.out)
    assert payload["rules"]["name"] == own_rules.name
    assert payload["rules"]["file"] == str(context / "rules.yaml") and payload["model"]["version"] == "1"
    assert str(context / "rules.yaml") in explained.err

    proposal = tmp_path_factory.mktemp("tune") / "rules.proposed.yaml"
    assert main(["-w", str(ws), "tune", "--model", "1", "--out", str(proposal), "--fit-rows", "2000"]) == 0
    tuned = capsys.readouterr()
    assert str(context / "train.yaml") in tuned.err
    assert "backtest on the test split" in tuned.out
    assert load_rules(ws / "configs" / "rules.yaml") == own_rules, "tune never writes the live rules"
