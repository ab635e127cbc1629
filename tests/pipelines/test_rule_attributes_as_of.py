"""The rule score's fit criteria read the attribute version valid at each row's as_of (the attribute
history), as the features do: a later change never moves an earlier cut-off's rule score, in `score`,
the training set's rule baseline, compare's and monitor's rule scores and `explain --since`
(real workspace, DuckDB, the SaaS rules: `industry_target`, 10 points for software or fintech)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from propensity import Project
from propensity.features.config import load_feature_config
from propensity.pipelines.cli import main
from propensity.pipelines.compare.evaluation import EvaluationData, rule_scores
from propensity.pipelines.rules.config import load_rules
from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world
from propensity.pipelines.training.config import load_train_config
from propensity.pipelines.training.dataset import assemble_training_set

ROOT = Path(__file__).resolve().parents[2]
SAAS = ROOT / "configs/rules/saas.yaml"
EARLY, CHANGE, LATE, AFTER_LATE = "2025-03-01", "2025-03-10", "2025-03-20", "2025-04-15"
KEYS = ["contact_id", "as_of"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Contacts as of 2025-02-01 (v1); on 2025-03-10 those outside the target industries move to software
    (v2); on 2025-04-15 they move on to healthcare (v3, after every cut-off the tests score)."""
    data = tmp_path_factory.mktemp("world")
    paths = write_world(generate_world(WorldConfig(contacts=600, days=90, seed=8)), data, fmt="csv")
    contacts = pd.read_csv(paths["contacts"], dtype={"contact_id": str, "account_id": str})
    moved = ~contacts["industry"].isin(["software", "fintech"])
    first = contacts.assign(updated_at="2025-02-01T00:00:00")
    second = first.assign(industry=np.where(moved, "software", first["industry"]), updated_at=f"{CHANGE}T00:00:00")
    third = second.assign(industry=np.where(moved, "healthcare", second["industry"]),
                          updated_at=f"{AFTER_LATE}T00:00:00")
    for name, frame in (("v1", first), ("v2", second), ("v3", third)):
        frame.to_csv(data / f"contacts_{name}.csv", index=False)
    return paths, data, sorted(contacts.loc[moved, "contact_id"])


def _workspace(tmp_path, files, *versions):
    paths, data, _ = files
    ws = tmp_path / "ws"
    for kind, path in (("events", paths["events"]), ("outcomes", paths["outcomes"]),
                       *(("contacts", data / f"contacts_{v}.csv") for v in versions)):
        assert main(["-w", str(ws), "ingest", kind, str(path)]) == 0
    return ws


def _score(ws, at, tmp_path, capsys):
    out = tmp_path / f"rules_{at}_{len(list(tmp_path.iterdir()))}.csv"
    capsys.readouterr()
    assert main(["-w", str(ws), "score", "--rules", str(SAAS), "--as-of", at, "--out", str(out)]) == 0
    said = " ".join(capsys.readouterr().out.split())
    return pd.read_csv(out, dtype={"contact_id": str}).set_index("contact_id").sort_index(), said


def test_score_reads_the_plan_valid_at_the_cut_off_and_a_later_change_moves_nothing(files, tmp_path, capsys):
    _, _, moved = files
    ws = _workspace(tmp_path, files, "v1")
    early_before, _ = _score(ws, EARLY, tmp_path, capsys)
    assert main(["-w", str(ws), "ingest", "contacts", str(files[1] / "contacts_v2.csv")]) == 0
    early_after, said = _score(ws, EARLY, tmp_path, capsys)
    pd.testing.assert_frame_equal(early_before, early_after)  # the change of 2025-03-10 moves nothing earlier
    assert "rule fit points: attribute values as they were at each row's as_of" in said
    known = [c for c in moved if c in early_after.index]
    assert len(known) > 100
    assert (early_after.loc[known, "points__industry_target"] == 0).all()  # the old industry
    late, _ = _score(ws, LATE, tmp_path, capsys)
    assert (late.loc[known, "points__industry_target"] == 10).all()  # the new one, valid since 2025-03-10
    # a change dated after LATE (v3): neither cut-off moves, while the contacts table holds it
    assert main(["-w", str(ws), "ingest", "contacts", str(files[1] / "contacts_v3.csv")]) == 0
    pd.testing.assert_frame_equal(_score(ws, LATE, tmp_path, capsys)[0], late)
    pd.testing.assert_frame_equal(_score(ws, EARLY, tmp_path, capsys)[0], early_before)
    assert Project(ws).ws.table("contacts").set_index("contact_id").loc[known, "industry"].eq("healthcare").all()
    out = tmp_path / "json.csv"
    capsys.readouterr()
    assert main(["-w", str(ws), "score", "--rules", str(SAAS), "--as-of", LATE, "--out", str(out), "--json"]) == 0
    assert "attribute history" in json.loads(capsys.readouterr().out)["attribute_values"]


def _train_config(tmp_path) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({
        "rules": str(SAAS), "features": str(ROOT / "configs/features.yaml"),
        "grid": {"first": "2025-02-15", "last": "2025-03-22", "step_days": 7}, "horizon_days": 14,
        "min_positives": 1, "points_only_below": 10, "split": {"valid_cutoffs": 1, "test_cutoffs": 1},
        "mlflow": {"experiment": "test", "model_name": "propensity-test"}}))
    return path


def _training_set(ws, config):
    project = Project(ws)
    con = project.ws.ibis_connection()
    return assemble_training_set(con, config, load_rules(config.rules), load_feature_config(config.features),
                                 events=con.table("events"), contacts=con.table("contacts"),
                                 outcomes=project.ws.table("outcomes"))


def test_the_training_rule_baseline_reads_each_cut_offs_attributes(files, tmp_path):
    _, _, moved = files
    ws = _workspace(tmp_path, files, "v1")
    config = load_train_config(_train_config(tmp_path))
    before = _training_set(ws, config).frame.set_index(KEYS).sort_index()
    assert main(["-w", str(ws), "ingest", "contacts", str(files[1] / "contacts_v2.csv")]) == 0
    assert main(["-w", str(ws), "ingest", "contacts", str(files[1] / "contacts_v3.csv")]) == 0
    ts = _training_set(ws, config)
    after = ts.frame.set_index(KEYS).sort_index()
    change = pd.Timestamp(CHANGE)
    cut = after.index.get_level_values("as_of")
    early, late = after[cut <= change], after[cut > change]
    # cut-offs up to the change (valid_from < as_of: one dated at the cut-off is not known at it): as before
    pd.testing.assert_series_equal(early["rule_score"], before.loc[early.index, "rule_score"])
    pd.testing.assert_series_equal(early["points"], before.loc[early.index, "points"])
    late_moved = late[late.index.get_level_values("contact_id").isin(moved)]
    assert len(late_moved) > 100
    # the later cut-offs read v2 (software: 10 points more), not the latest v3 (healthcare: none)
    gained = late_moved["points"] - before.loc[late_moved.index, "points"]
    np.testing.assert_allclose(gained.to_numpy(), 10.0)
    assert "rule fit points: attribute values as they were at each row's as_of" in ts.attribute_values

    # compare's (and monitor's) rule score of the same rows: the training set's baseline
    data = EvaluationData.from_workspace(Project(ws).ws)
    rows = ts.frame[KEYS].reset_index(drop=True)
    scored = rule_scores(data, rows, load_rules(SAAS), data.spine_table(rows))
    np.testing.assert_allclose(scored["rule_score"].to_numpy(), ts.frame["rule_score"].to_numpy(), atol=1e-12)


def test_explain_since_reads_both_dates_from_the_history_and_still_sums(files, tmp_path):
    _, _, moved = files
    ws = _workspace(tmp_path, files, "v1", "v2", "v3")
    project = Project(ws)
    contacts = project.ws.table("contacts")
    known = [c for c in moved if c in set(contacts["contact_id"])]
    report = project.explain_change(known[0], EARLY, as_of=LATE, model=None, rules=SAAS)
    split = report.rule
    fit = split.components()["fit"].iloc[0]
    assert fit > 0  # v1 -> v2 (software), not v1 -> the latest v3 (healthcare: no points either side)
    assert abs(split.components().sum(axis=1).iloc[0] - split.change[0]) < 1e-9
    assert any("rule score at 2025-03-20 00:00: attributes as they were then" in n for n in report.notes)
    # the batch: every contact whose rule band changed, each split summing to its change
    batch = project.explain_change(None, EARLY, as_of=LATE, model=None, rules=SAAS)
    components = batch.rule.components().sum(axis=1).to_numpy()
    assert np.abs(components - batch.rule.change).max() < 1e-9


@pytest.mark.slow
def test_explains_rule_breakdown_reads_the_attributes_of_its_as_of(files, tmp_path, capsys, world):
    from propensity.pipelines.explain.jobs import explain_one

    _, _, moved = files
    ws = _workspace(tmp_path, files, "v1", "v2", "v3")
    late, _ = _score(ws, LATE, tmp_path, capsys)
    contact = next(c for c in moved if c in late.index)
    report = explain_one(Project(ws).ws, contact, pd.Timestamp(LATE).to_pydatetime(), world.result.scorer,
                         load_rules(SAAS))
    fit = report.rules.set_index("rule")["points"]
    assert fit["industry_target"] == 10  # software, valid from 2025-03-10 to 2025-04-15, not the latest
    assert report.rule_score == pytest.approx(late.loc[contact, "rule_score"], abs=1e-12)
    assert report.rule_points == pytest.approx(late.loc[contact, "points"], abs=1e-9)
