"""`propensity train` end to end on a small synthetic world, with a real MLflow store."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from propensity.features.store import Workspace, ingest_file
from propensity.pipelines.cli import main
from propensity.pipelines.rules import load_rules
from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world
from propensity.pipelines.training.config import load_train_config
from propensity.pipelines.training.train import NotEnoughPositives, train

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


def _config(tmp_path, **overrides) -> Path:
    data = {
        "rules": str(ROOT / "configs/rules/saas.yaml"),
        "features": str(ROOT / "configs/features.yaml"),
        "grid": {"first": "2025-02-01", "last": "2025-05-01", "step_days": 10},
        "horizon_days": 30,
        # a generous time budget: a budget that cuts a fit short depends on machine load, so only
        # the trial count may bind for results to be reproducible
        "model": {"tune": True, "n_trials": 2, "timeout_seconds": 900, "seed": 0},
        "min_positives": 20,
        "points_only_below": 50,
        "mlflow": {"experiment": "test", "model_name": "propensity-test"},
    }
    data.update(overrides)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    data = tmp_path_factory.mktemp("world")
    world = generate_world(WorldConfig(contacts=4000, days=150, seed=11))
    paths = write_world(world, data, fmt="parquet")
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    for kind in ("contacts", "events", "outcomes"):
        ingest_file(ws, kind, paths[kind])
    return ws


@pytest.fixture(scope="module")
def trained(workspace, tmp_path_factory):
    config = load_train_config(_config(tmp_path_factory.mktemp("cfg")))
    return train(workspace, config)


def test_training_registers_and_promotes_only_on_a_gain_beyond_chance(trained):
    test = trained.metrics[trained.metrics["split"] == "test"].set_index("model")
    assert set(test.index) == {"learned", "rules", "learned_points"}
    assert test.loc["learned", "roc_auc"] > 0.7
    assert trained.model_version == "1"
    decision = trained.registry
    # the gain is measured on each model's own score, exactly as the metrics table reports it
    assert decision.gain == pytest.approx(test.loc["learned", "roc_auc"] - test.loc["rules", "roc_auc"], abs=1e-9)
    assert decision.gain_low < decision.gain < decision.gain_high
    assert decision.promoted == (decision.gain_low > 0)
    assert ("registered, not promoted" in decision.reason) != decision.promoted
    assert 0 <= test.loc["learned", "ece"] < 0.05


def test_the_model_records_the_feature_set_it_was_built_with(trained):
    import mlflow

    config = trained.scorer.feature_config
    assert config["monetary_types"] == ["purchase"]  # `auto` in the shipped file: resolved
    assert any(c.startswith("purchase__rfm_") for c in trained.scorer.feature_names)
    params = mlflow.get_run(trained.run_id).data.params
    assert params["feature_config.monetary_types"] == str(config["monetary_types"])
    assert params["feature_config.half_lives_days"] == str(config["half_lives_days"])


def test_windows_on_auto_are_chosen_from_the_data_and_recorded(workspace, tmp_path):
    from propensity.features.auto import measure_cadence, propose_windows
    from propensity.features.config import load_feature_config
    from propensity.pipelines.training.dataset import assemble_training_set

    features = tmp_path / "features.yaml"
    features.write_text("windows_days: auto\nhalf_lives_days: auto\nmonetary_types: []\n")
    config = load_train_config(_config(tmp_path, features=str(features), horizon_days=21))
    con = workspace.ibis_connection()
    ts = assemble_training_set(con, config, load_rules(config.rules), load_feature_config(features),
                               events=con.table("events"), contacts=con.table("contacts"),
                               outcomes=workspace.table("outcomes"))
    cadence = measure_cadence(con.table("events"))
    proposal = propose_windows(21, cadence.gap_days, cadence.span_days)
    assert ts.feature_config.windows_days == proposal.windows_days
    assert ts.feature_config.half_lives_days == proposal.half_lives_days
    assert "horizon 21 days" in ts.feature_note
    assert f"page_view__count_{proposal.windows_days[0]}d" in ts.feature_columns


def test_the_learned_rules_file_is_valid_and_scores_through_the_cli(trained, workspace, tmp_path):
    rules = load_rules(trained.learned_rules_path)
    assert rules.name.endswith("_learned")
    out = tmp_path / "learned_rules_scores.csv"
    args = ["-w", str(workspace.path), "score", "--rules", str(trained.learned_rules_path), "--as-of", "2025-05-01",
            "--out", str(out)]
    assert main(args) == 0
    assert pd.read_csv(out)["rule_score"].between(0, 5).all()


def test_the_champion_loads_in_a_fresh_process_and_outputs_probability_and_score(trained, workspace, tmp_path):
    features = trained.test_scores  # keys of the test rows
    from propensity.features.spine import spine_at
    from propensity.pipelines.training.as_trained import features_as_trained

    # the pyfunc's input: the features as the model was trained (with the rules' columns, rule__*)
    feature_frame = tmp_path / "features.parquet"
    con = workspace.ibis_connection()
    spine = spine_at(con.table("events"), pd.Timestamp("2025-05-01"), con.table("contacts"))
    features_as_trained(con.table("events"), spine, trained.scorer, con.table("contacts")).execute().to_parquet(feature_frame)
    assert any(c.startswith("rule__") for c in trained.scorer.feature_names)
    script = textwrap.dedent(f"""
        import mlflow, pandas as pd
        mlflow.set_tracking_uri("sqlite:///{(workspace.path / 'mlflow.db').resolve()}")
        model = mlflow.pyfunc.load_model("models:/propensity-test/1")
        frame = pd.read_parquet("{feature_frame}")
        out = model.predict(frame)
        assert list(out.columns) == ["probability", "learned_score"], out.columns
        assert out["probability"].between(0, 1).all() and out["learned_score"].between(0, 5).all()
        print(len(out))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip().splitlines()[-1]) == len(pd.read_parquet(feature_frame))
    assert len(features) > 0


def test_score_with_a_registered_version_through_the_cli(trained, workspace, tmp_path):
    out = tmp_path / "learned.parquet"
    args = ["-w", str(workspace.path), "score", "--model", "1", "--model-name", "propensity-test",
            "--as-of", "2025-05-01", "--out", str(out)]
    assert main(args) == 0
    scored = pd.read_parquet(out)
    assert {"contact_id", "as_of", "probability", "learned_score", "band"} <= set(scored.columns)
    assert scored["contact_id"].is_unique


def test_the_same_data_config_and_seed_train_to_the_same_model_and_figures(workspace, tmp_path, trained):
    import mlflow

    again = train(workspace, load_train_config(_config(tmp_path)))
    # the trial count decided, not the clock: every trial ran and nothing was cut
    for run in (trained, again):
        search = run.summary["search"]
        assert search["trials_completed"] == search["n_trials"] == 2 and not search["cut_by_time_budget"]
    assert mlflow.get_run(again.run_id).data.tags["search_cut_by_time_budget"] == "False"
    pd.testing.assert_frame_equal(again.metrics, trained.metrics, check_exact=True)
    pd.testing.assert_frame_equal(again.test_scores, trained.test_scores, check_exact=True)
    assert again.scorer.metadata["params"] == trained.scorer.metadata["params"]
    assert again.scorer.booster.model_to_string() == trained.scorer.booster.model_to_string()
    assert again.model_version == "2" and not again.registry.promoted  # an identical model moves no alias


def test_the_run_states_how_the_calibration_holds_on_the_test_period(trained):
    shift = trained.summary["calibration_shift"]
    metrics = trained.metrics.set_index(["model", "split"])
    assert shift["test"]["ece"] == pytest.approx(metrics.loc[("learned", "test"), "ece"], abs=1e-12)
    assert shift["valid"]["ece"] == pytest.approx(metrics.loc[("learned", "valid"), "ece"], abs=1e-12)
    assert shift["shift"] == pytest.approx(shift["test"]["ece"] - shift["valid"]["ece"])
    (cutoff,) = shift["test_by_cutoff"]  # one test cut-off here
    assert cutoff["rows"] == shift["test"]["rows"] == int(metrics.loc[("learned", "test"), "n"])
    assert cutoff["rate"] == pytest.approx(trained.test_scores["label"].mean())
    # the card says the same, beside the version's context files
    card = (trained.context_path / "card.md").read_text(encoding="utf-8")
    assert "## Calibration on the next period" in card
    assert f"| test | {shift['test']['rows']:,} | {shift['test']['rate']:.3f} |" in card


def test_too_few_positives_stops_with_a_message_that_says_what_to_do(workspace, tmp_path):
    config = load_train_config(_config(tmp_path, min_positives=100_000))
    with pytest.raises(NotEnoughPositives, match=r"only \d+ positive.*Add cut-offs"):
        train(workspace, config, track=False)


def test_between_the_minimum_and_the_threshold_only_the_points_model_is_trained(workspace, tmp_path):
    config = load_train_config(_config(tmp_path, points_only_below=100_000))
    result = train(workspace, config, track=False)
    assert result.points_only and result.scorer is None
    assert set(result.metrics["model"]) == {"rules", "learned_points"}


def test_compiled_trees_score_a_registered_model_identically_through_the_cli(trained, workspace, tmp_path, monkeypatch):
    pytest.importorskip("tl2cgen", reason="the [fast] extra (treelite, tl2cgen) is not installed")
    monkeypatch.setenv("PROPENSITY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PROPENSITY_COMPILED_TREES", "0")  # the CLI sets it; monkeypatch restores it after
    base = ["-w", str(workspace.path), "score", "--model", "1", "--model-name", "propensity-test",
            "--as-of", "2025-05-01"]
    assert main([*base, "--out", str(tmp_path / "plain.parquet")]) == 0
    assert not (tmp_path / "cache").exists()
    assert main([*base, "--compiled", "--out", str(tmp_path / "compiled.parquet")]) == 0
    assert list((tmp_path / "cache" / "compiled-trees").glob("trees-*")), "the libraries were compiled and cached"
    plain, compiled = pd.read_parquet(tmp_path / "plain.parquet"), pd.read_parquet(tmp_path / "compiled.parquet")
    pd.testing.assert_frame_equal(compiled, plain, check_exact=False, rtol=0, atol=1e-12)


def test_compiled_without_a_model_is_refused(workspace):
    assert main(["-w", str(workspace.path), "score", "--compiled", "--as-of", "2025-05-01"]) == 2


def test_compiled_without_a_compiler_is_a_message_not_a_traceback(workspace, monkeypatch, tmp_path, capfd):
    import importlib.util

    if importlib.util.find_spec("tl2cgen") is None:  # then the message is about the missing extra
        pytest.skip("the [fast] extra (treelite, tl2cgen) is not installed")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no gcc
    monkeypatch.setenv("PROPENSITY_COMPILED_TREES", "0")
    args = ["-w", str(workspace.path), "score", "--model", "champion", "--model-name", "propensity-test",
            "--compiled", "--as-of", "2025-05-01"]
    assert main(args) == 2
    err = capfd.readouterr().err
    flat = " ".join(err.replace("│", " ").split())  # typer wraps the message in a box
    assert "gcc was not found on PATH" in flat and "Traceback" not in err


def test_the_run_carries_its_context_pinned_requirements_and_tuned_parameters(trained, workspace):
    import mlflow
    from mlflow.tracking import MlflowClient
    from importlib.metadata import version

    from propensity.pipelines.project import Project

    run = MlflowClient().get_run(trained.run_id)
    tuned = {k: v for k, v in run.data.params.items() if k.startswith("tuned.")}
    assert tuned and tuned["tuned.num_leaves"] == str(trained.scorer.metadata["params"]["num_leaves"])
    assert run.data.metrics["learned.test.roc_auc"] == pytest.approx(
        trained.metrics.set_index(["model", "split"]).loc[("learned", "test"), "roc_auc"])
    listed = {a.path for a in MlflowClient().list_artifacts(trained.run_id, "context")}
    assert listed == {f"context/{n}" for n in ("train.yaml", "rules.yaml", "features.yaml", "rules.learned.yaml",
                                               "card.md")}
    requirements = Path(mlflow.pyfunc.get_model_dependencies("models:/propensity-test/1")).read_text().split()
    assert f"lightgbm=={version('lightgbm')}" in requirements
    # propensity is not on PyPI: the model carries the package as code (test_pyfunc_portable.py)
    assert not any(line.startswith("propensity") for line in requirements)
    model = Project(workspace).model("1", "propensity-test")
    assert model.folder == workspace.path / "models" / "propensity-test" / "v1"
    assert load_train_config(model.file("train")).horizon_days == 30
    # the feature config as resolved for the model: the same features, not `auto` chosen again
    from propensity.features.config import FeatureConfig, load_feature_config

    assert load_feature_config(model.file("features")) == FeatureConfig.of_model(trained.scorer.feature_config)
