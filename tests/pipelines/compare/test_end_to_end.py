"""`propensity compare` end to end on a tiny synthetic world: CLI, numbers, report in Chromium."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import yaml

from propensity.pipelines.cli import main
from propensity.pipelines.compare import (
    CompareConfig,
    compare_models,
    rescale_raw_points,
)
from propensity.pipelines.compare.evaluation import EvaluationData, raw_points
from propensity.pipelines.rules.config import load_rules
from propensity.pipelines.training.config import load_train_config
from tests.browser import IMAGES, OPENING, VERDICT, open_in_chromium

pytestmark = pytest.mark.slow
PLOT_IDS = ["plot-gain", "plot-calibration", "plot-distribution", "plot-bands", "plot-transitions", "plot-backtest"]


@pytest.fixture(scope="module")
def cli_run(trained_workspace, world, tmp_path_factory):
    ws, config_path, result = trained_workspace
    out = tmp_path_factory.mktemp("report")
    settings = out / "compare.yaml"
    settings.write_text(yaml.safe_dump({"n_boot": 200, "examples_per_cell": 2,
                                        "backtest": {"last_n": 2, "n_boot": 50}}))
    args = ["-w", str(ws.path), "compare", "--config", str(config_path), "--compare-config", str(settings),
            "--model-name", world.model_name, "--model", result.model_version, "--k", "5,10", "--backtest", "--out-dir", str(out)]
    assert main(args) == 0
    return out, json.loads((out / "compare.json").read_text()), result


def test_compare_writes_every_metric_for_the_three_models_on_the_test_cutoff(cli_run):
    out, report, trained = cli_run
    assert report["models"] == ["rules", "learned", "learned_points"]
    assert report["warnings"] == [], "the model was trained with this very config: nothing to warn about"
    assert (out / "compare.html").stat().st_size > 10_000
    test_cutoff = pd.Timestamp(trained.test_scores["as_of"].iloc[0])
    assert report["meta"]["cutoffs"] == [f"{test_cutoff:%Y-%m-%d}"]
    summary = {row["model"]: row for row in report["summary"]}
    assert summary["rules"]["n"] == len(trained.test_scores)
    for row in summary.values():
        assert row["roc_auc_low"] <= row["roc_auc"] <= row["roc_auc_high"]
        assert 0 <= row["ece"] <= 1 and 0 <= row["brier"] <= 1
    assert sorted({row["k_percent"] for row in report["top_k"]}) == [5.0, 10.0]
    counts = np.array(report["transitions"]["rules->learned"]["counts"])
    assert counts.sum() == summary["rules"]["n"]
    assert all(len(ids) <= 2 for ids in report["transitions"]["rules->learned"]["examples"].values())


def test_the_model_rescored_from_the_workspace_gives_trainings_own_test_numbers(cli_run):
    _, report, trained = cli_run
    summary = {row["model"]: row for row in report["summary"]}
    recorded = trained.metrics[trained.metrics["split"] == "test"].set_index("model")
    # same rows, same features, same model, each ranked by its own 0-5 score in both: identical AUCs
    for model in ("learned", "rules", "learned_points"):
        assert summary[model]["roc_auc"] == pytest.approx(recorded.loc[model, "roc_auc"], abs=1e-9), model
        assert summary[model]["pr_auc"] == pytest.approx(recorded.loc[model, "pr_auc"], abs=1e-9), model
    # and the same isotonic fit on valid for the calibration figures
    assert summary["learned"]["brier"] == pytest.approx(recorded.loc["learned", "brier"], abs=1e-9)
    assert summary["rules"]["brier"] == pytest.approx(recorded.loc["rules", "brier"], abs=1e-9)


def test_the_backtest_refits_per_cutoff_and_its_last_cutoff_reproduces_the_comparison(cli_run):
    _, report, _ = cli_run
    backtest = pd.DataFrame(report["backtest"])
    assert backtest["as_of"].nunique() == 2 and set(backtest["model"]) == {"rules", "learned", "learned_points"}
    last = backtest[backtest["as_of"] == backtest["as_of"].max()].set_index("model")
    summary = {row["model"]: row for row in report["summary"]}
    # the champion was fitted with tune=False on the same rows the walk-forward uses at the test cut-off
    for model in ("rules", "learned", "learned_points"):
        assert last.loc[model, "roc_auc"] == pytest.approx(summary[model]["roc_auc"], abs=1e-9), model
    assert {"roc_auc_gap", "roc_auc_gap_low", "lift_top5", "recall_top10"} <= set(backtest.columns)


def test_the_report_opens_in_chromium_without_errors_and_with_every_plot(cli_run):
    out, _, _ = cli_run
    problems, seen = open_in_chromium(out / "compare.html", {
        "images": IMAGES, "opening": OPENING, "said": VERDICT,  # the page opens with the verdict compare.json carries
        "present": f"{PLOT_IDS!r}.filter(id => document.getElementById(id) !== null)"})
    images, opening, said, present = seen["images"], seen["opening"], seen["said"], seen["present"]
    assert problems == []
    assert present == PLOT_IDS
    assert opening == "plain-verdict" and said == json.loads((out / "compare.json").read_text())["verdict"]
    assert "calls" in said[0] and "your rules" in said[0]
    broken = [image["id"] for image in images if not image["ok"]]
    assert images and broken == []


def test_learned_raw_points_rescaled_from_the_hand_ones_equal_an_event_pass(trained_workspace):
    ws, config_path, result = trained_workspace
    config = load_train_config(config_path)
    hand, learned = load_rules(config.rules), load_rules(result.learned_rules_path)
    data = EvaluationData.from_workspace(ws)
    rows = result.test_scores[["contact_id", "as_of"]].reset_index(drop=True)
    spine = data.spine_table(rows, "_rescale_test")
    expected = raw_points(data, rows, learned, spine)
    rescaled = rescale_raw_points(raw_points(data, rows, hand, spine), hand, learned)
    pd.testing.assert_frame_equal(rescaled, expected, check_exact=False, rtol=1e-9, atol=1e-9)
    assert any(a.points != b.points for a, b in zip(hand.activities, learned.activities)), "nothing was rescaled"


def test_without_a_registered_model_the_rules_and_points_are_compared_with_a_warning(trained_workspace):
    ws, config_path, _ = trained_workspace
    comparison = compare_models(ws, load_train_config(config_path), CompareConfig(n_boot=20),
                                model_name="no-such-model")
    assert comparison.models == ["rules", "learned_points"]
    assert any("no registered model" in w for w in comparison.warnings)


def test_a_missing_learned_rules_file_exits_2_and_says_what_to_run(trained_workspace, tmp_path, capsys):
    ws, config_path, _ = trained_workspace
    args = ["-w", str(ws.path), "compare", "--config", str(config_path),
            "--learned-rules", str(tmp_path / "nope.yaml"), "--out-dir", str(tmp_path)]
    assert main(args) == 2
    assert "run `propensity train` first" in capsys.readouterr().err.replace("\n", " ")
    assert not os.path.exists(tmp_path / "compare.json")
