"""The monitor's pure parts: PSI and the drift record, alerts from two records, the verdict."""

import math

import numpy as np
import pandas as pd
import pytest

from propensity.pipelines.monitor.alerts import cutoff_alerts
from propensity.pipelines.monitor.config import MonitorConfig, load_monitor_config
from propensity.pipelines.monitor.drift import (
    drift_profile,
    event_type_changes,
    feature_drift,
    psi,
)
from propensity.pipelines.monitor.verdict import monitor_verdict
from propensity.pipelines.shipped import shipped_config


def test_psi_is_zero_for_equal_shares_and_the_textbook_sum_otherwise():
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == pytest.approx(0.0, abs=1e-12)
    a, e = np.array([0.1, 0.4, 0.5]), np.array([0.3, 0.3, 0.4])
    assert psi(a, e) == pytest.approx(float(((a - e) * np.log(a / e)).sum()), rel=1e-12)


def test_a_feature_drawn_from_the_same_distribution_barely_moves_and_a_shifted_one_does():
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"x": rng.exponential(1.0, 20_000), "plan": rng.choice(["a", "b"], 20_000)})
    profile = drift_profile(train, ["x"], {"plan": ["a", "b"]}, bins=10)
    same = pd.DataFrame({"x": rng.exponential(1.0, 5_000), "plan": rng.choice(["a", "b"], 5_000)})
    moved = pd.DataFrame({"x": rng.exponential(2.0, 5_000), "plan": rng.choice(["a", "b", "c"], 5_000)})
    quiet, loud = feature_drift(profile, same).set_index("feature"), feature_drift(profile, moved).set_index("feature")
    assert quiet.loc["x", "psi"] < 0.02 and loud.loc["x", "psi"] > 0.25
    assert quiet.loc["plan", "unseen_share"] == 0.0
    assert loud.loc["plan", "unseen_share"] == pytest.approx((moved["plan"] == "c").mean())


def test_a_profiled_feature_missing_from_the_cutoff_is_an_error_not_drift():
    profile = drift_profile(pd.DataFrame({"x": [1.0, 2.0, 3.0]}), ["x"], {})
    with pytest.raises(ValueError, match="lack"):
        feature_drift(profile, pd.DataFrame({"y": [1.0]}))


def test_event_types_appear_with_enough_events_and_vanish_with_none():
    appeared, vanished = event_type_changes(["a", "b"], {"a": 5, "c": 30, "d": 3}, min_events=20)
    assert appeared == ["c"] and vanished == ["b"]


def _record(as_of, auc=(0.80, 0.75, 0.85), positives=50, predicted=50.0, holders=100, n=2000):
    model = {"n": n, "positives": positives, "base_rate": positives / n, "roc_auc": auc[0], "roc_auc_low": auc[1],
             "roc_auc_high": auc[2], "pr_auc": 0.2, "pr_auc_low": 0.15, "pr_auc_high": 0.25, "predicted": predicted,
             "predicted_var": predicted * 0.97, "ece": 0.01, "brier": 0.02}
    band = {"band": "hot", "min_score": 3.5, "contacts": 200, "share": 200 / n, "conversions": 20,
            "conversion_rate": 0.1, "predicted": 20.0, "predicted_var": 18.0}
    rule = {"rule": "demo", "holders": holders, "holder_conversions": 20, "others": n - holders,
            "other_conversions": positives - 20}
    return {"as_of": as_of, "n": n, "positives": positives, "models": {"rules": model}, "bands": {"rules": [band]},
            "rules": [rule], "top_k": []}


def test_the_same_numbers_as_the_reference_raise_nothing():
    assert cutoff_alerts(_record("r"), _record("c"), MonitorConfig()) == []


def test_a_ranking_whose_interval_lies_below_the_reference_interval_asks_for_a_rules_review():
    (alert,) = cutoff_alerts(_record("r"), _record("c", auc=(0.66, 0.60, 0.72)), MonitorConfig())
    assert (alert.kind, alert.subject, alert.action) == ("performance", "rules", "rules review")
    assert "ROC-AUC 0.660" in alert.reason and "do not overlap" in alert.reason
    # overlapping intervals: no alert, however low the point estimate
    assert cutoff_alerts(_record("r"), _record("c", auc=(0.70, 0.60, 0.76)), MonitorConfig()) == []


def test_calibration_is_judged_against_the_reference_ratio():
    config = MonitorConfig()
    # twice the predicted conversions, but the reference was off the same way: no news
    assert not [a for a in cutoff_alerts(_record("r", positives=100), _record("c", positives=100), config)
                if a.kind == "calibration"]
    alerts = [a for a in cutoff_alerts(_record("r"), _record("c", positives=100), config) if a.kind == "calibration"]
    assert [a.subject for a in alerts] == ["rules"] and "100 happened" in alerts[0].reason


def test_a_rule_that_suddenly_covers_many_more_contacts_is_named_for_review():
    alerts = cutoff_alerts(_record("r"), _record("c", holders=600), MonitorConfig())
    coverage = [a for a in alerts if a.subject == "demo:coverage"]
    assert coverage and coverage[0].action == "rules review" and "'demo'" in coverage[0].reason


def test_drift_already_there_at_the_reference_and_ignored_ages_do_not_alert():
    config = MonitorConfig()
    features = [{"feature": "x__count_7d", "psi": 0.9, "unseen_share": None},
                {"feature": "tenure_days", "psi": 3.0, "unseen_share": None}]
    reference = _record("r") | {"drift": {"features": [{"feature": "x__count_7d", "psi": 0.8}], "appeared": [],
                                          "vanished": []}}
    current = _record("c") | {"drift": {"features": features, "appeared": [], "vanished": []}}
    assert cutoff_alerts(reference, current, config) == []
    reference["drift"]["features"][0]["psi"] = 0.1
    (alert,) = cutoff_alerts(reference, current, config)
    assert alert.kind == "drift" and alert.values["features"] == ["x__count_7d"] and alert.action == "train"


def test_the_verdict_says_what_to_do_about_the_latest_alerts():
    alert = cutoff_alerts(_record("r"), _record("2025-05-01T00:00:00", holders=600), MonitorConfig())[0]
    data = {"meta": {"horizon_days": 30, "reference": "2025-04-01T00:00:00"}, "reference": _record("2025-04-01T00:00:00"),
            "cutoffs": [_record("2025-05-01T00:00:00")], "latest_alerts": [alert.to_dict()]}
    said = monitor_verdict(data)
    assert said[0].startswith("1 cut-off(s) measured since the champion's test cut-off (2025-04-01)")
    assert said[-1].startswith("What to do: review the rules")
    assert monitor_verdict(data | {"latest_alerts": []})[-1] == "No alert on the latest cut-off: nothing to do."


def test_the_shipped_monitor_config_loads_and_a_typo_names_the_key(tmp_path):
    assert load_monitor_config(shipped_config("monitor.yaml")) == MonitorConfig()
    bad = tmp_path / "monitor.yaml"
    bad.write_text("alerts: {band_zz: 3}\n")
    with pytest.raises(ValueError, match=r"monitor.yaml.*alerts\.band_zz"):
        load_monitor_config(bad)
    assert math.isfinite(MonitorConfig().drift.psi_threshold)


def test_the_schedule_keeps_closed_windows_and_the_latest_open_cutoff_is_the_last_one_before_the_data_end():
    from propensity.pipelines.monitor.jobs import latest_open, schedule

    first, end = pd.Timestamp("2025-05-01"), pd.Timestamp("2025-06-01")
    assert schedule(first, 7, 14, end) == [pd.Timestamp(d) for d in ("2025-05-01", "2025-05-08", "2025-05-15")]
    assert latest_open(first, 7, 14, end) == pd.Timestamp("2025-05-29")
    assert latest_open(first, 7, 3, pd.Timestamp("2025-06-01")) is None  # 05-29 + 3 days closed by 06-01


def test_an_open_cutoff_is_judged_on_volumes_coverage_and_drift_only():
    current = _record("c", holders=600, auc=(0.5, 0.4, 0.6))
    opened = {"as_of": "c", "open": True, "n": current["n"], "bands": {"rules": [
        {k: v for k, v in b.items() if k in ("band", "min_score", "contacts", "share")} for b in current["bands"]["rules"]]},
        "rules": [{"rule": "demo", "holders": 600, "others": 1400}]}
    kinds = {(a.kind, a.subject) for a in cutoff_alerts(_record("r"), opened, MonitorConfig())}
    assert kinds == {("rule", "demo:coverage")}


def test_the_label_free_roc_auc_is_the_mean_of_the_auc_over_labels_drawn_from_the_probabilities():
    from sklearn.metrics import roc_auc_score

    from propensity.pipelines.monitor.measure import expected_roc_auc

    rng = np.random.default_rng(3)
    p = rng.beta(0.6, 6.0, 400)
    score = np.round(5 * p ** 0.5, 1)  # a 0-5 score with ties, monotone in p
    draws = [roc_auc_score(y, score) for y in (rng.random((4000, p.size)) < p) if 0 < y.sum() < y.size]
    # a ratio of expectations, not the expectation of the ratio: equal to within the draws' noise
    assert expected_roc_auc(p, score) == pytest.approx(float(np.mean(draws)), abs=0.005)
    assert expected_roc_auc(p, -score) == pytest.approx(1 - expected_roc_auc(p, score), abs=1e-12)
