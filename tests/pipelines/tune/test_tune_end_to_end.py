"""`propensity tune` on a small synthetic world: the proposal loads, scores through the engine
exactly as the backtest scored it, and never overwrites the live rules."""

import json

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from propensity.pipelines.cli import main
from propensity.pipelines.rules import load_rules
from tests.worlds import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tuned(world, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tune")
    out, report = folder / "rules.proposed.yaml", folder / "tune.json"
    code = main(["-w", str(world.ws.path), "tune", "--config", str(world.config_path), "--out", str(out),
                 "--report", str(report), "--force", "--model", world.version])
    assert code == 0
    return out, json.loads(report.read_text())


def test_the_proposal_loads_and_keeps_the_hand_rules_structure(tuned):
    out, report = tuned
    proposed, hand = load_rules(out), load_rules(ROOT / "configs/rules/saas.yaml")
    assert proposed.name == "saas_proposed"
    assert [a.name for a in proposed.activities][: len(hand.activities)] == [a.name for a in hand.activities]
    assert [a.event for a in proposed.activities][: len(hand.activities)] == [a.event for a in hand.activities]
    assert proposed.scale == hand.scale and proposed.bands == hand.bands and proposed.thresholds == hand.thresholds
    assert out.with_suffix(".diff").read_text().startswith("--- current")
    assert set(report["test"]) == {"current rules", "proposed rules", "learned model"}
    assert {r["status"] for r in report["changes"]} <= {"kept", "changed", "new", "no signal"}


def test_the_report_says_why_it_is_offered_or_not_and_each_change_its_evidence(tuned):
    import re

    _, report = tuned
    low, high = report["gain_interval"]
    gain = report["test"]["proposed rules"]["roc_auc"] - report["test"]["current rules"]["roc_auc"]
    assert low <= gain <= high and report["gain"] == pytest.approx(gain, abs=1e-9)
    losing = sum(r["gain"] < 0 for r in report["walk_forward"])
    assert report["walk_forward"], "the world's grid has earlier cut-offs with closed labels"
    assert report["offered"] == (low > 0 and 2 * losing < len(report["walk_forward"]))
    assert report["reason"].startswith("offered" if report["offered"] else "not offered")
    for change in report["changes"]:
        assert re.search(r"SHAP share [\d.]+% of mean \|SHAP\| vs [\d.]+% of the rule points", change["note"])
        assert "this rule alone" in change["note"], change["note"]


def test_the_proposal_report_puts_the_diff_beside_its_evidence_in_calls_and_conversions(tuned):
    out, report = tuned
    text = out.with_suffix(".md").read_text()
    first = text.split("\n")[2]
    assert first.startswith("Calling the top 10% by ") and " calls." in first
    assert "your rules" in first and "the proposed rules" in first
    assert ("**Decision:** Offered" if report["offered"] else "**Decision:** Not offered") in text
    low, high = report["gain_interval"]
    assert f"{report['gain']:+.3f} (paired bootstrap interval {low:+.3f} to {high:+.3f})" in text
    # the diff is the one written beside the proposal, whole
    diff = out.with_suffix(".diff").read_text().rstrip("\n")
    assert "```diff\n" + diff + "\n```" in text
    assert text.index("## Evidence on the test cut-off") < text.index("## The change to the rules file")


def test_force_writes_a_proposal_that_is_not_offered_and_says_so(world, tmp_path, capsys):

    out, report = tmp_path / "forced.proposed.yaml", tmp_path / "forced.json"
    assert main(["-w", str(world.ws.path), "tune", "--config", str(world.config_path), "--out", str(out),
                 "--report", str(report), "--force", "--model", world.version]) == 0
    printed = capsys.readouterr().out
    if json.loads(report.read_text())["offered"]:
        assert "NOT offered" not in printed
    else:
        assert out.exists() and "NOT offered" in printed


def test_the_engine_scores_the_proposal_as_the_backtest_did(tuned, world, tmp_path):
    out, report = tuned
    test = world.result.test_scores[["contact_id", "as_of", "label"]]
    as_of = pd.Timestamp(test["as_of"].iloc[0])
    assert test["as_of"].nunique() == 1
    scores = tmp_path / "scores.parquet"
    assert main(["-w", str(world.ws.path), "score", "--rules", str(out), "--as-of", as_of.isoformat(),
                 "--out", str(scores)]) == 0
    scored = test.merge(pd.read_parquet(scores), on="contact_id", how="left")
    assert scored["rule_score"].notna().all()
    auc = roc_auc_score(scored["label"], scored["rule_score"])
    assert auc == pytest.approx(report["test"]["proposed rules"]["roc_auc"], abs=1e-9)


def test_tune_refuses_to_write_over_the_live_rules(world, tmp_path):
    live = tmp_path / "live.yaml"
    live.write_text((ROOT / "configs/rules/saas.yaml").read_text())
    before = live.read_text()
    code = main(["-w", str(world.ws.path), "tune", "--config", str(world.config_path), "--rules", str(live),
                 "--out", str(live), "--force", "--model", world.version])
    assert code == 2
    assert live.read_text() == before
