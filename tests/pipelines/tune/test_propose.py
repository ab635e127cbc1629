"""Proposing rules from SHAP contributions: pure parts on data made in code."""

import numpy as np
import pandas as pd
import pytest

from propensity.pipelines.rules.config import Activity, FitCriterion, RuleSet, load_rules
from propensity.pipelines.rules.score import apply_caps
from propensity.pipelines.tune import Candidate, TuneConfig, fit_criteria_for, gap_closed, nice_round, propose_rules
from propensity.pipelines.rules.rounding import nice_ceil, points_resolution
from propensity.pipelines.tune.candidates import uncovered_event_groups

RULES = RuleSet(
    name="toy",
    activities=(
        Activity(name="demo", event="demo_requested", points=50, half_life_days=30),
        Activity(name="opens", event="email_open", points=1, cap=10),
        Activity(name="pricing", event="page_view", where={"path": "/pricing"}, points=5),
    ),
    fit=(FitCriterion(name="big", attribute="company_size", min=100, points=10),),
    scale={0: 0, 25: 1, 50: 2, 75: 3, 150: 4, 300: 5},
    bands=({"name": "cold", "min_score": 0}, {"name": "warm", "min_score": 2}, {"name": "hot", "min_score": 3.5}),
    thresholds={"pql": 75},
)


def test_nice_round_writes_values_a_person_would():
    # a file in whole points: integers below 10, then 10, 15, 20, 25, 30, 40, 50, 75, 100, 150 ...
    assert [nice_round(v) for v in (37, -18, 6.3, 1.1, 130, 0.6, 0.4, 0.075)] == [40, -20, 6, 1, 150, 1, 0, 0]
    # a file in tenths (OULAD's 0.2, 0.5): 0.1 ... 0.9, then 1, 1.5, 2 ...
    assert [nice_round(v, resolution=0.1) for v in (0.27, 0.075, 1.3, 0.04)] == [0.3, 0.1, 1.5, 0]
    assert points_resolution([50, 10, 5, 1, -20]) == 1 and points_resolution([0.5, 0.2, 20]) == 0.1
    assert nice_ceil(3.5) == 4 and nice_ceil(26) == 30 and nice_ceil(25) == 25
    for resolution in (1.0, 0.1):
        values = np.geomspace(resolution, 900, 200)
        rounded = [nice_round(v, resolution=resolution) for v in values]
        assert rounded == sorted(rounded), "rounding keeps the order"
        assert max(abs(np.log(r / v)) for r, v in zip(rounded, values)) < np.log(1.42)
        # every value is a whole multiple of the resolution and has at most 2 significant figures
        assert all(abs(r / resolution - round(r / resolution)) < 1e-9 for r in rounded)
        assert all(len(f"{r / resolution:.0f}".rstrip("0")) <= 2 for r in rounded)


def test_rounding_lives_in_one_module():
    from propensity.pipelines.rules import rounding
    from propensity.pipelines.training import points
    from propensity.pipelines.tune import propose, shapes

    assert points.human_round is rounding.human_round and propose.nice_round is rounding.nice_round
    assert shapes.readable_edge is rounding.readable_edge


def test_an_event_read_only_through_a_filter_counts_as_uncovered():
    uncovered = uncovered_event_groups(RULES, ("demo_requested", "email_open", "page_view", "webinar_attended"))
    assert uncovered == {"page_view": "page_view", "webinar_attended": "webinar_attended"}


def test_fit_criteria_follow_the_steps_of_the_shap_curve():
    rng = np.random.default_rng(0)
    size = pd.Series(rng.integers(1, 5000, 4000).astype("float64"))
    phi = np.where(size >= 1000, 0.8, np.where(size < 50, -0.5, 0.0)) + rng.normal(0, 0.01, 4000)
    criteria = fit_criteria_for("company_size", size, phi, max_bins=3, min_share=0.005)
    assert len(criteria) == 2
    # the bin holding most contacts (>= 1000) is the reference; the other two become criteria
    edges = sorted({v for c in criteria for v in (c.min, c.max) if v is not None})
    assert edges == [pytest.approx(50, abs=1), pytest.approx(1000, abs=10)]
    assert all(c.min is None or c.min < 1000 for c in criteria)
    role = pd.Series(rng.choice(["student", "vp", "engineer", "manager"], 4000, p=[0.1, 0.1, 0.5, 0.3]))
    phi = role.map({"student": -1.0, "vp": 0.6, "engineer": 0.0, "manager": 0.05}).to_numpy()
    criteria = fit_criteria_for("role", role, phi, max_bins=3, min_share=0.02)
    assert sorted(tuple(c.in_) for c in criteria) == [("student",), ("vp",)]


def _toy_rows(n=3000, seed=1):
    """Unit raw columns of candidates, and SHAP values that a known rule file would produce."""
    rng = np.random.default_rng(seed)
    demo = rng.poisson(0.3, n) * rng.uniform(0.3, 1, n)
    opens = rng.poisson(4, n) * rng.uniform(0.5, 1, n)
    pricing = rng.poisson(0.5, n).astype("float64")
    views = pricing + rng.poisson(5, n)
    webinar = rng.poisson(0.2, n).astype("float64")
    size = rng.integers(1, 2000, n).astype("float64")
    industry = rng.choice(["software", "retail", "media"], n, p=[0.3, 0.5, 0.2])
    unit = pd.DataFrame({"c0": demo, "c1": opens, "c2": pricing, "c3": views, "c4": webinar})
    candidates = [
        Candidate("c0", "demo_requested", RULES.activities[0].model_copy(update={"name": "c0", "points": 1.0}), "demo"),
        Candidate("c1", "email_open", RULES.activities[1].model_copy(update={"name": "c1", "points": 1.0, "cap": None}), "opens"),
        Candidate("c2", "page_view", RULES.activities[2].model_copy(update={"name": "c2", "points": 1.0}), "pricing"),
        Candidate("c3", "page_view", Activity(name="c3", event="page_view", points=1.0), None),
        Candidate("c4", "webinar_attended", Activity(name="c4", event="webinar_attended", points=1.0), None),
    ]
    capped_opens = 10 * -np.expm1(-opens / 10)
    logodds = pd.DataFrame({
        "demo_requested": 0.4 * demo - 0.1,
        "email_open": 0.02 * capped_opens - 0.05,
        "page_view": 0.05 * views - 0.3,
        "webinar_attended": 0.8 * webinar - 0.15,
        "company_size": np.where(size >= 100, 0.3, 0.0) - 0.25,
        "industry": np.where(industry == "software", 0.5, 0.0) - 0.15,
        "all_activity": rng.normal(0, 0.3, n),
    })
    kinds = {"demo_requested": "event", "email_open": "event", "page_view": "event", "webinar_attended": "event",
             "company_size": "fit", "industry": "fit", "all_activity": "activity"}
    attributes = pd.DataFrame({"company_size": size, "industry": industry})
    hand = 50 * demo + apply_caps(pd.DataFrame({"points__opens": opens}), RULES)["points__opens"].to_numpy() \
        + 5 * pricing + np.where(size >= 100, 10, 0)
    return logodds, kinds, unit, candidates, attributes, hand


def test_proposed_points_follow_the_learned_log_odds_per_unit():
    logodds, kinds, unit, candidates, attributes, hand = _toy_rows()
    proposal = propose_rules(RULES, logodds, kinds, unit, candidates, attributes, hand,
                             TuneConfig(reshape=False, min_share=0.005, target="groups"))
    rules = {a.name: a for a in proposal.rules.activities}
    fit = {c.name: c for c in proposal.rules.fit}
    k = proposal.k_points_per_logodds
    # demo: 0.4 log-odds per unit; webinar (a new rule): 0.8; the big-company criterion: 0.3
    assert rules["demo"].points == nice_round(0.4 * k)
    assert rules["webinar_attended"].points == nice_round(0.8 * k)
    assert fit["big"].points == nice_round(0.3 * k)
    assert rules["webinar_attended"].description == "proposed by propensity tune"
    # industry had no criterion: the software bin becomes one, the rest earns nothing
    new_fit = [c for c in proposal.rules.fit if c.attribute == "industry"]
    assert [c.in_ for c in new_fit] == [["software"]] and new_fit[0].points == nice_round(0.5 * k)
    # the all-activity signal has no rule that could read it
    assert proposal.out_of_reach["group"].tolist() == ["all_activity"]
    changes = proposal.changes.set_index("rule")
    assert changes.loc["webinar_attended", "status"] == "new" and changes.loc["demo", "status"] == "changed"
    # the structure of the hand rules is kept: same names first, same events, filters and scale
    assert [a.name for a in proposal.rules.activities][:3] == ["demo", "opens", "pricing"]
    assert proposal.rules.activities[2].where == {"path": "/pricing"}
    assert proposal.rules.scale == RULES.scale and proposal.rules.bands == RULES.bands


def test_the_margin_target_lets_rules_carry_correlated_signal_no_rule_reads():
    logodds, kinds, unit, candidates, attributes, hand = _toy_rows()
    # overall activity the model credits moves with demo requests: per group it is out of reach,
    # jointly the demo rule carries it (0.4 own + 0.2 borrowed log-odds per unit)
    logodds["all_activity"] = 0.2 * unit["c0"].to_numpy()
    config = TuneConfig(reshape=False, min_share=0.005)
    joint = propose_rules(RULES, logodds, kinds, unit, candidates, attributes, hand, config)
    from dataclasses import replace

    separate = propose_rules(RULES, logodds, kinds, unit, candidates, attributes, hand, replace(config, target="groups"))
    # (rel 5e-3: the pricing rule the joint fit would cut to 0 is kept, and the fit is redone around it)
    assert joint.changes.set_index("rule").loc["demo", "logodds_per_unit"] == pytest.approx(0.6, rel=5e-3)
    assert separate.changes.set_index("rule").loc["demo", "logodds_per_unit"] == pytest.approx(0.4, rel=1e-3)


def test_a_rule_whose_group_carries_nothing_is_flagged(tmp_path):
    logodds, kinds, unit, candidates, attributes, hand = _toy_rows()
    logodds["email_open"] = 0.0
    proposal = propose_rules(RULES, logodds, kinds, unit, candidates, attributes, hand,
                             TuneConfig(reshape=False, zero_no_signal=True))
    assert proposal.changes.set_index("rule").loc["opens", "status"] == "no signal"
    path = tmp_path / "proposed.yaml"
    from propensity.pipelines.rules.config import dump_rules

    path.write_text(dump_rules(proposal.rules))
    assert load_rules(path) == proposal.rules


def test_reshaping_finds_the_half_life_the_model_uses():
    logodds, kinds, unit, candidates, attributes, hand = _toy_rows()
    rng = np.random.default_rng(3)
    fast = unit["c0"] * rng.uniform(0.2, 1.0, len(unit))  # the same events, decayed faster
    unit["c5"] = fast
    candidates = candidates + [Candidate("c5", "demo_requested", candidates[0].activity.model_copy(
        update={"name": "c5", "half_life_days": 7.0}), "demo")]
    logodds["demo_requested"] = 0.4 * fast
    proposal = propose_rules(RULES, logodds, kinds, unit, candidates, attributes, hand, TuneConfig())
    demo = next(a for a in proposal.rules.activities if a.name == "demo")
    assert demo.half_life_days == 7.0
    kept = propose_rules(RULES, logodds, kinds, unit, candidates, attributes, hand, TuneConfig(reshape=False))
    assert next(a for a in kept.rules.activities if a.name == "demo").half_life_days == 30.0


def test_gap_closed_is_the_share_of_the_auc_gap():
    assert gap_closed(0.70, 0.75, 0.80) == pytest.approx(0.5)
    assert np.isnan(gap_closed(0.80, 0.82, 0.79))


def test_a_second_shape_of_an_event_is_added_when_one_shape_cannot_say_it():
    # the model credits demo requests as "many over the month, but a recent one counts most": a long
    # and a short decay of the same events with their own points, which no single shape explains
    logodds, kinds, unit, candidates, attributes, hand = _toy_rows()
    rng = np.random.default_rng(4)
    fast = unit["c0"] * rng.uniform(0.0, 1.0, len(unit)) ** 3
    unit["c5"] = fast
    candidates = candidates + [Candidate("c5", "demo_requested", candidates[0].activity.model_copy(
        update={"name": "c5", "half_life_days": 3.0}), "demo")]
    logodds["demo_requested"] = 0.2 * unit["c0"] + 1.0 * fast
    config = TuneConfig(reshape=False, min_share=0.005, second_shapes=False)
    one = propose_rules(RULES, logodds, kinds, unit, candidates, attributes, hand, config)
    from dataclasses import replace

    two = propose_rules(RULES, logodds, kinds, unit, candidates, attributes, hand, replace(config, second_shapes=True))
    grouped = propose_rules(RULES, logodds, kinds, unit, candidates, attributes, hand,
                            replace(config, second_shapes=True, target="groups"))
    assert "demo_hl3d" not in {a.name for a in grouped.rules.activities}  # margin target only
    assert "demo_hl3d" not in {a.name for a in one.rules.activities}
    rules = {a.name: a for a in two.rules.activities}
    k = two.k_points_per_logodds
    assert rules["demo_hl3d"].event == "demo_requested" and rules["demo_hl3d"].half_life_days == 3.0
    assert rules["demo_hl3d"].points == nice_round(1.0 * k, resolution=points_resolution([50, 1, 5, 10]))
    assert rules["demo"].points == nice_round(0.2 * k, resolution=points_resolution([50, 1, 5, 10]))
    changes = two.changes.set_index("rule")
    assert changes.loc["demo_hl3d", "status"] == "new" and "second shape beside demo" in changes.loc["demo_hl3d", "note"]
    # a group one shape explains gets no second rule
    assert not [a for a in two.rules.activities if a.name.startswith(("opens_", "pricing_"))]


def test_hand_rules_are_reshaped_to_other_expiries_only_when_asked():
    from propensity.pipelines.tune.candidates import candidate_rules

    plain = candidate_rules(RULES, ("demo_requested",), half_lives=(None, 7.0), new_expiries=(30.0,), new_rules=False)
    wide = candidate_rules(RULES, ("demo_requested",), half_lives=(None, 7.0), new_expiries=(30.0,), new_rules=False,
                           reshape_expiries=(None, 90.0))
    def shapes(cands):
        return {(c.existing, c.activity.half_life_days, c.activity.expires_after_days) for c in cands}

    assert ("demo", 7.0, 90.0) not in shapes(plain) and ("demo", 7.0, 90.0) in shapes(wide)
    assert ("demo", None, 90.0) in shapes(wide) and shapes(plain) <= shapes(wide)
    # the hand rule's own shape is still there once, and what propose_rules starts from
    assert sum(1 for c in wide if (c.existing, c.activity.half_life_days, c.activity.expires_after_days)
               == ("demo", 30.0, None)) == 1
