"""The learned points model on a synthetic world whose true weights are known."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import ibis
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from propensity.pipelines.rules.config import RuleSet, dump_rules, load_rules
from propensity.pipelines.rules.score import activity_points, score_frame
from propensity.pipelines.synthetic import HIDDEN_EVENT_WEIGHTS, SAAS_RULE_HIDDEN_KIND, WorldConfig, generate_world
from propensity.pipelines.training.labels import label_spine
from propensity.pipelines.training.points import (
    LearnedPoints,
    PointsModelConfig,
    fit_points_model,
    human_round,
    rule_design_matrix,
)

RULES_PATH = Path(__file__).parents[3] / "configs" / "rules" / "saas.yaml"
WORLD = WorldConfig(contacts=12_000, days=120, seed=0)
HORIZON_DAYS = 30
TRAIN_DAYS = (14, 21, 28, 35, 42, 49, 56)  # cut-offs, days after the world's start
VALID_DAY = 60
TEST_DAY = 90  # its label window starts after every train and valid window has ended


@dataclass(frozen=True)
class Data:
    rules: RuleSet
    con: ibis.BaseBackend
    contacts: pd.DataFrame
    rows: pd.DataFrame  # contact_id, as_of, label, split
    raw: pd.DataFrame  # keys + points__{activity}, aligned with rows
    X: pd.DataFrame
    hand: pd.DataFrame  # score_frame of the hand rules

    def part(self, split: str) -> tuple[pd.DataFrame, pd.Series]:
        mask = (self.rows["split"] == split).to_numpy()
        return self.X[mask], self.rows["label"][mask]

    def score(self, rules: RuleSet, split: str) -> pd.DataFrame:
        """Score one split's rows with ``rules`` from the events, as `propensity score` would."""
        rows = self.rows[self.rows["split"] == split][["contact_id", "as_of"]]
        spine = self.con.create_table(f"spine_{split}", rows, overwrite=True)
        raw = activity_points(self.con.table("events"), spine, rules).execute()
        raw = rows.merge(raw, on=["contact_id", "as_of"], how="left")
        return score_frame(raw, self.contacts, rules)


def build_data(config: WorldConfig) -> Data:
    world = generate_world(config)
    con = ibis.duckdb.connect()
    con.create_table("events", world.events)
    start = pd.Timestamp(config.start)
    split_of_day = {d: "train" for d in TRAIN_DAYS} | {VALID_DAY: "valid", TEST_DAY: "test"}
    spines = []
    for day, split in split_of_day.items():
        as_of = start + pd.Timedelta(days=day)
        known = world.contacts[world.contacts["created_at"] < as_of]
        spines.append(pd.DataFrame({"contact_id": known["contact_id"], "as_of": as_of, "split": split}))
    spine = pd.concat(spines, ignore_index=True).astype({"as_of": "datetime64[us]"})
    data_end = (start + pd.Timedelta(days=config.days)).to_pydatetime()
    labelled = label_spine(spine, world.outcomes, HORIZON_DAYS, data_end=data_end)
    rows = labelled.merge(spine, on=["contact_id", "as_of"])[["contact_id", "as_of", "label", "split"]]

    rules = load_rules(RULES_PATH)
    raw = activity_points(con.table("events"), con.create_table("spine", rows[["contact_id", "as_of"]]), rules)
    raw = rows[["contact_id", "as_of"]].merge(raw.execute(), on=["contact_id", "as_of"], how="left")
    return Data(
        rules=rules,
        con=con,
        contacts=world.contacts,
        rows=rows,
        raw=raw,
        X=rule_design_matrix(raw, world.contacts, rules),
        hand=score_frame(raw, world.contacts, rules),
    )


def learn(data: Data, config: PointsModelConfig) -> LearnedPoints:
    X_train, y_train = data.part("train")
    X_valid, y_valid = data.part("valid")
    hand_valid = data.hand["points"][(data.rows["split"] == "valid").to_numpy()]
    return fit_points_model(
        X_train, y_train, data.rules, config, X_valid, y_valid, hand_valid, learned_at=date(2025, 6, 1)
    )


@pytest.fixture(scope="module")
def data() -> Data:
    return build_data(WORLD)


@pytest.fixture(scope="module")
def learned(data: Data) -> LearnedPoints:
    return learn(data, PointsModelConfig())


@pytest.fixture(scope="module")
def learned_on_test(data: Data, learned: LearnedPoints) -> pd.DataFrame:
    return data.score(learned.rules, "test")


@pytest.fixture(scope="module")
def unrounded(data: Data, learned: LearnedPoints) -> LearnedPoints:
    return learn(data, PointsModelConfig(l2=learned.l2, round_to=0))  # the same model, exact points


@pytest.fixture(scope="module")
def unrounded_on_valid(data: Data, unrounded: LearnedPoints) -> pd.DataFrame:
    return data.score(unrounded.rules, "valid")


def test_the_design_matrix_times_the_hand_points_is_the_hand_total(data):
    units = [a.points * a.weight for a in data.rules.activities] + [f.points for f in data.rules.fit]
    np.testing.assert_allclose(data.X.to_numpy() @ np.array(units), data.hand["points"], atol=1e-9)
    assert set(np.unique(data.X[["company_size_target", "industry_target"]])) <= {0.0, 1.0}


def test_learned_rules_validate_round_trip_and_keep_the_hand_structure(learned, learned_on_test, data, tmp_path):
    path = tmp_path / "rules.learned.yaml"
    path.write_text(dump_rules(learned.rules), encoding="utf-8")
    loaded = load_rules(path)
    assert loaded == learned.rules
    assert loaded.name == "saas_learned" and "learned from outcomes on 2025-06-01" in loaded.description
    assert (loaded.scale, loaded.bands, loaded.thresholds, loaded.rollup) == (
        data.rules.scale, data.rules.bands, data.rules.thresholds, data.rules.rollup
    )
    structure = ["name", "event", "where", "weight", "half_life_days", "expires_after_days", "per_value"]
    for old, new in zip(data.rules.activities, loaded.activities, strict=True):
        assert [getattr(new, k) for k in structure] == [getattr(old, k) for k in structure]
        assert (new.cap is None) == (old.cap is None)
    assert learned_on_test["rule_score"].between(0, 5).all() and learned_on_test["points"].notna().all()


def test_learned_rules_reproduce_the_fitted_contributions_exactly_caps_included(data, unrounded, unrounded_on_valid):
    exact, scored = unrounded, unrounded_on_valid
    X_valid, _ = data.part("valid")
    coefficients = exact.coefficients.set_index("rule")
    for rule in coefficients.index:
        if coefficients.loc[rule, "note"].startswith("sign flipped: the engine caps"):
            continue  # documented approximation
        expected = exact.k_points_per_logodds * coefficients.loc[rule, "coefficient"] * X_valid[rule]
        np.testing.assert_allclose(scored[f"points__{rule}"], expected, rtol=1e-9, atol=1e-9, err_msg=rule)


def test_the_learned_rules_keep_the_hot_band_and_the_pql_share_about_as_big(data, unrounded_on_valid):
    valid = (data.rows["split"] == "valid").to_numpy()
    hand, ours = data.hand[valid], unrounded_on_valid
    hot = data.rules.bands[-1].min_score
    for column, edge in (("rule_score", hot), ("points", data.rules.thresholds["pql"])):
        share_hand, share_ours = (hand[column] >= edge).mean(), (ours[column] >= edge).mean()
        assert 2 / 3 < share_ours / share_hand < 3 / 2, (column, share_ours, share_hand)
    nothing = (data.X[valid] == 0).all(axis=1).to_numpy()
    assert nothing.any() and (ours["points"][nothing] == 0).all()  # no intercept: nothing known is 0


def test_learned_points_rank_the_true_drivers_above_the_weak_ones(learned):
    per_unit = learned.coefficients.set_index("rule")["learned_per_unit"]
    for strong in ("teammate_invited", "core_feature_used"):
        for weak in ("pricing_page", "email_open"):
            assert per_unit[strong] > per_unit[weak], (strong, weak, per_unit.to_dict())
    assert per_unit["unsubscribed"] < 0


def test_learned_points_order_agrees_with_the_hidden_weights(learned):
    frame = learned.coefficients.set_index("rule").loc[list(SAAS_RULE_HIDDEN_KIND)]
    hidden = [HIDDEN_EVENT_WEIGHTS[k] for k in SAAS_RULE_HIDDEN_KIND.values()]
    rho_learned = spearmanr(frame["learned_per_unit"], hidden).statistic
    rho_hand = spearmanr(frame["current_per_unit"], hidden).statistic
    # The hand file already ranks well (0.78). Asymptotically (60k contacts) the learned ranking
    # reaches about 0.82; at test size the gap is within sampling noise, so only a clear positive
    # agreement is asserted here, not "better than hand".
    assert rho_learned > 0.6, (rho_learned, rho_hand)


def test_learned_rules_rank_a_later_cut_off_at_least_as_well_as_the_hand_rules(learned_on_test, data):
    y_test = data.rows["label"][(data.rows["split"] == "test").to_numpy()]
    hand_auc = roc_auc_score(y_test, data.hand["points"][(data.rows["split"] == "test").to_numpy()])
    learned_auc = roc_auc_score(y_test, learned_on_test["points"])
    assert learned_auc >= hand_auc, (learned_auc, hand_auc)


def test_the_hand_prior_with_a_tiny_penalty_matches_the_zero_prior(data):
    zero = learn(data, PointsModelConfig(prior="zero", l2=1e-6, round_to=0))
    hand = learn(data, PointsModelConfig(prior="hand", l2=1e-6, round_to=0))
    np.testing.assert_allclose(hand.coefficients["coefficient"], zero.coefficients["coefficient"], atol=1e-3)
    np.testing.assert_allclose(hand.k_points_per_logodds, zero.k_points_per_logodds, rtol=1e-3)


def test_the_hand_prior_with_a_huge_penalty_gives_back_the_hand_points(data):
    strong = learn(data, PointsModelConfig(prior="hand", l2=1e9, round_to=0))
    frame = strong.coefficients
    ratio = frame["learned_points"] / frame["current_points"]
    np.testing.assert_allclose(ratio, ratio.mean(), rtol=1e-4)  # the hand points up to one factor
    np.testing.assert_allclose(ratio.mean(), 1.0, rtol=1e-3)  # ... which the scale matching undoes
    rounded = learn(data, PointsModelConfig(prior="hand", l2=1e9))
    assert [a.points for a in rounded.rules.activities] == [a.points for a in data.rules.activities]
    assert [f.points for f in rounded.rules.fit] == [f.points for f in data.rules.fit]


def test_the_penalty_is_chosen_on_validation_log_loss(learned):
    assert set(learned.validation_log_loss) == set(PointsModelConfig().l2_grid)
    assert learned.l2 == min(learned.validation_log_loss, key=learned.validation_log_loss.get)


def test_rounded_points_are_numbers_a_person_would_write(learned):
    for value in learned.coefficients["learned_points"]:
        step = next(s for limit, s in ((1, 0.1), (10, 0.5), (50, 1), (200, 5), (np.inf, 10)) if abs(value) < limit)
        assert abs(value / step - round(value / step)) < 1e-9, value
    for activity in learned.rules.activities:
        assert activity.cap is None or activity.cap == human_round(activity.cap) or activity.points == 0


@pytest.mark.parametrize(
    ("value", "step", "expected"),
    [(0.234, None, 0.2), (3.26, None, 3.5), (27.4, None, 27.0), (123.0, None, 125.0), (1234.0, None, 1230.0),
     (-7.3, None, -7.5), (0.04, None, 0.0), (7.3, 2.0, 8.0), (7.3, 0, 7.3)],
)
def test_human_round(value, step, expected):
    assert human_round(value, step) == pytest.approx(expected)
    assert str(human_round(-0.01)) == "0.0"


def test_small_learned_points_become_zero_but_stay_in_the_file(data):
    pruned = learn(data, PointsModelConfig(l2=1.0, min_abs_points=1e6))
    assert [a.name for a in pruned.rules.activities] == [a.name for a in data.rules.activities]
    assert all(a.points == 0 for a in pruned.rules.activities) and all(f.points == 0 for f in pruned.rules.fit)


def test_a_design_matrix_without_the_rule_columns_is_a_clear_error(data):
    X_train, y_train = data.part("train")
    with pytest.raises(ValueError, match="lacks rule columns.*email_open"):
        fit_points_model(X_train.drop(columns="email_open"), y_train, data.rules)
    with pytest.raises(ValueError, match="both positives and negatives"):
        fit_points_model(X_train, np.zeros(len(X_train)), data.rules)
    with pytest.raises(ValueError, match="raw points lack columns"):
        rule_design_matrix(data.raw.drop(columns="points__email_open"), data.contacts, data.rules)
