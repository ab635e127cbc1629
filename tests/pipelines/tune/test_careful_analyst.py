"""Issue 13: `tune` never offers what a careful analyst would reject (pure parts, data made in code)."""

import re

import numpy as np
import pandas as pd
import pytest

from propensity.pipelines.tune import TuneConfig, propose_rules
from propensity.pipelines.tune.gate import decide_offer, walk_forward_gains
from tests.pipelines.tune.test_propose import RULES, _toy_rows


def _ladder_value(points: float) -> bool:
    """A whole number with at most 2 significant figures (the toy file is written in whole points)."""
    return points == round(points) and len(f"{abs(points):.0f}".rstrip("0")) <= 2


def test_no_proposed_cap_swallows_one_events_points():
    logodds, kinds, unit, candidates, attributes, hand = _toy_rows()
    # the model credits an email open fully from the first (decayed) event on: the best cap in
    # per-unit terms lies below one event, which old tune turned into points far above the cap
    decayed = unit["c1"].to_numpy() * 0.05
    unit["c1"] = decayed
    logodds["email_open"] = 0.6 * np.minimum(decayed, 0.05) / 0.05 - 0.3
    # and a hand rule whose own cap is below its points per event
    rules = RULES.model_copy(update={"activities": (
        RULES.activities[0], RULES.activities[1].model_copy(update={"points": 30.0, "cap": 10.0}), RULES.activities[2])})
    proposal = propose_rules(rules, logodds, kinds, unit, candidates, attributes, hand, TuneConfig(min_share=0.005))
    capped = [a for a in proposal.rules.activities if a.cap is not None]
    assert capped, "the toy must propose at least one capped rule"
    for activity in capped:
        assert activity.points * activity.weight <= activity.cap, activity
    kept = propose_rules(rules, logodds, kinds, unit, candidates, attributes, hand,
                         TuneConfig(min_share=0.005, reshape=False))
    opens = next(a for a in kept.rules.activities if a.name == "opens")
    assert opens.cap is not None and opens.points * opens.weight <= opens.cap
    assert "swallowed 30 points per event" in kept.changes.set_index("rule").loc["opens", "note"]


def test_proposed_points_are_written_as_a_person_writes_them():
    logodds, kinds, unit, candidates, attributes, hand = _toy_rows()
    for config in (TuneConfig(), TuneConfig(reshape=False, target="groups"), TuneConfig(min_share=0.005)):
        proposal = propose_rules(RULES, logodds, kinds, unit, candidates, attributes, hand, config)
        values = [a.points for a in proposal.rules.activities] + [c.points for c in proposal.rules.fit]
        values += [a.cap for a in proposal.rules.activities if a.cap is not None]
        assert all(_ladder_value(v) for v in values), values
    # a file written in tenths keeps tenths
    tenths = RULES.model_copy(update={"activities": tuple(a.model_copy(update={"points": a.points / 10})
                                                          for a in RULES.activities)})
    proposal = propose_rules(tenths, logodds, kinds, unit, candidates, attributes, hand / 10, TuneConfig())
    assert all(abs(a.points * 10 - round(a.points * 10)) < 1e-9 for a in proposal.rules.activities)


def test_a_rule_the_model_uses_is_never_cut_to_zero():
    logodds, kinds, unit, candidates, attributes, hand = _toy_rows()
    # page views carry 12% of the model's |SHAP|; the joint fit hands the pricing rule's share to
    # the new page_view rule (pricing views are page views) and would cut pricing from 5 to ~0
    share = logodds.abs().mean()
    assert share["page_view"] / share.sum() > 0.05
    proposal = propose_rules(RULES, logodds, kinds, unit, candidates, attributes, hand, TuneConfig())
    pricing = next(a for a in proposal.rules.activities if a.name == "pricing")
    assert pricing.points >= 0.2 * 5
    note = proposal.changes.set_index("rule").loc["pricing", "note"]
    assert "although the model uses page_view" in note
    # the floor is configurable: above page_view's share, the cut goes through
    cut = propose_rules(RULES, logodds, kinds, unit, candidates, attributes, hand, TuneConfig(keep_share=0.5))
    assert abs(next(a for a in cut.rules.activities if a.name == "pricing").points) < 0.2 * 5


def test_every_change_names_its_evidence():
    logodds, kinds, unit, candidates, attributes, hand = _toy_rows()
    proposal = propose_rules(RULES, logodds, kinds, unit, candidates, attributes, hand, TuneConfig())
    changes = proposal.changes
    assert changes["points_share"].sum() == pytest.approx(1.0)
    for row in changes.itertuples():
        match = re.search(r"SHAP share ([\d.]+)% of mean \|SHAP\| vs ([\d.]+)% of the rule points", row.note)
        assert match, row.note
        assert float(match.group(1)) == pytest.approx(100 * row.share, abs=0.051)
        assert float(match.group(2)) == pytest.approx(100 * row.points_share, abs=0.051)


def _scores(gain_test: float, gain_past: float, n=6000, cutoffs=6, seed=0) -> pd.DataFrame:
    """Labels and two rule scores; ``proposed`` carries more of the signal by the given amount."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(cutoffs + 1):
        split = "test" if c == cutoffs else "train"
        signal = rng.normal(size=n)
        label = (rng.uniform(size=n) < 1 / (1 + np.exp(-(signal * 2 - 3)))).astype(int)
        noise = rng.normal(size=n)
        gain = gain_test if split == "test" else gain_past
        current = signal + 1.0 * noise
        proposed = signal + (1.0 - gain) * noise
        rows.append(pd.DataFrame({"as_of": pd.Timestamp("2025-01-01") + pd.Timedelta(days=14 * c), "split": split,
                                  "label": label, "current": current, "proposed": proposed}))
    return pd.concat(rows, ignore_index=True)


def test_a_negligible_gain_is_not_offered():
    same = _scores(0.0, 0.0)
    same["proposed"] = same["current"] + 1e-3 * np.random.default_rng(1).normal(size=len(same))
    decision = decide_offer(same, n_boot=300)
    assert abs(decision.gain) < 0.002 and not decision.offered
    assert decision.interval[0] <= 0 <= decision.interval[1]
    assert "not clear of zero" in decision.reason


def test_a_clear_gain_that_the_past_confirms_is_offered_and_one_it_contradicts_is_not():
    clear = decide_offer(_scores(0.5, 0.5), n_boot=300)
    assert clear.offered and clear.interval[0] > 0 and len(clear.walk_forward) == 6
    assert (clear.walk_forward["gain"] > 0).all()
    contradicted = decide_offer(_scores(0.5, -0.5), n_boot=300)
    assert contradicted.interval[0] > 0 and not contradicted.offered
    assert "earlier cut-offs disagree" in contradicted.reason


def test_walk_forward_leaves_out_cutoffs_with_one_class():
    scores = _scores(0.3, 0.3, cutoffs=3)
    first = scores["as_of"] == scores["as_of"].min()
    scores.loc[first, "label"] = 0
    past = walk_forward_gains(scores)
    assert len(past) == 2 and scores.loc[first, "as_of"].iloc[0] not in set(past["as_of"])


def test_a_test_split_with_one_class_is_not_offered():
    scores = _scores(0.5, 0.5, cutoffs=2)
    scores.loc[scores["split"] == "test", "label"] = 0
    decision = decide_offer(scores, n_boot=50)
    assert not decision.offered and "single class" in decision.reason and np.isnan(decision.gain)
