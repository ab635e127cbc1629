"""BG/NBD expected purchases as a model input: fitted per training cut-off on past events only,
stored with the model, rebuilt by scoring exactly as training had them, refused where it cannot run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from propensity.features.build import build_features
from propensity.features.config import FeatureConfig
from propensity.features.spine import spine_from_frame
from propensity.pipelines.synthetic_repeat import (
    RepeatWorldConfig,
    generate_repeat_world,
)
from propensity.pipelines.training.expected_purchases import (
    ExpectedPurchases,
    conditional_expected_purchases,
    fit_bgnbd,
    fit_expected_purchases,
    rfm_columns,
)

pytest.importorskip("lifetimes", reason="the BG/NBD fit needs the btyd extra")

WORLD = RepeatWorldConfig(contacts=2500, days=300, acquisition_days=240, seed=11)
CUTOFFS = pd.to_datetime(["2024-07-01", "2024-07-15", "2024-07-29", "2024-08-12", "2024-08-26"])
SPLITS = ("train", "train", "train", "valid", "test")
FEATURES = FeatureConfig(windows_days=(30,), half_lives_days=(14.0,), monetary_types=("purchase",),
                         lifetime_features=False, trend_features=False, account_features=False)
COLUMN = "purchase__bgnbd_expected_30d"


@pytest.fixture(scope="module")
def repeat():
    return generate_repeat_world(WORLD)


def _frame(events: pd.DataFrame, contacts: pd.DataFrame) -> pd.DataFrame:
    import ibis

    con = ibis.duckdb.connect()
    ev, ct = con.create_table("events", events), con.create_table("contacts", contacts)
    created = contacts.set_index("contact_id")["created_at"]
    rows = pd.concat([pd.DataFrame({"contact_id": created.index[created < c], "as_of": c, "split": s})
                      for c, s in zip(CUTOFFS, SPLITS, strict=True)], ignore_index=True)
    spine = spine_from_frame(con, rows[["contact_id", "as_of"]])
    built = build_features(ev, spine, FEATURES, contacts=ct, event_types=("purchase", "site_visit")).execute()
    built["as_of"] = pd.to_datetime(built["as_of"]).astype("datetime64[us]")
    rows["as_of"] = rows["as_of"].astype("datetime64[us]")
    return rows.merge(built, on=["contact_id", "as_of"], validate="one_to_one")


def test_each_training_cut_off_gets_its_own_fit_and_every_later_row_the_latest(repeat):
    frame = _frame(repeat.events, repeat.contacts)
    out, fitted, notes = fit_expected_purchases(frame, ["purchase"], 30.0)
    assert fitted is not None and fitted.fitted_as_of == str(CUTOFFS[2]) and "r=" in notes[0]
    for cutoff in CUTOFFS:
        rows = out[out["as_of"] == cutoff]
        train_rows = out[(out["as_of"] == cutoff) & (out["split"] == "train")]
        params = fit_bgnbd(*(train_rows[c] for c in rfm_columns("purchase"))) if len(train_rows) else fitted.params["purchase"]
        want = conditional_expected_purchases(*(rows[c] for c in rfm_columns("purchase")), params, 30.0)
        want = np.where(rows["purchase__rfm_frequency"].isna() | ~(want >= 0), np.nan, want)
        np.testing.assert_allclose(rows[COLUMN], want, rtol=1e-12, equal_nan=True)
    assert out[COLUMN].notna().all()  # every customer has bought (the acquisition purchase)
    # it says something: more expected purchases, more buyers in the window
    window = repeat.outcomes[(repeat.outcomes["ts"] >= CUTOFFS[-1]) & (repeat.outcomes["ts"] < CUTOFFS[-1] + pd.Timedelta(days=30))]
    test = out[out["split"] == "test"]
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(test["contact_id"].isin(window["contact_id"]), test[COLUMN]) > 0.7


def test_events_after_the_latest_training_cut_off_move_neither_the_fit_nor_a_training_row(repeat):
    before, fitted_before, _ = fit_expected_purchases(_frame(repeat.events, repeat.contacts), ["purchase"], 30.0)
    purchases = repeat.events[repeat.events["event_type"] == "purchase"].sample(400, random_state=1)
    later = purchases.assign(event_id=lambda f: "late" + f["event_id"],
                             ts=CUTOFFS[2] + pd.to_timedelta(np.arange(400) * 3, unit="h"))
    after, fitted_after, _ = fit_expected_purchases(
        _frame(pd.concat([repeat.events, later], ignore_index=True), repeat.contacts), ["purchase"], 30.0)
    assert fitted_after == fitted_before
    train = before["split"] == "train"
    pd.testing.assert_series_equal(after.loc[train, COLUMN], before.loc[train, COLUMN])
    assert not np.allclose(after.loc[~train, COLUMN], before.loc[~train, COLUMN])  # later rows do see them


def test_a_row_of_weight_two_counts_as_two_customers(repeat):
    """Training's negative sampling weighs kept rows 1 / rate: the fit must read them so."""
    frame = _frame(repeat.events, repeat.contacts)
    rows = frame[frame["as_of"] == CUTOFFS[2]].reset_index(drop=True)
    cols = rfm_columns("purchase")
    doubled = pd.concat([rows, rows.iloc[::3]], ignore_index=True)
    weights = np.where(np.arange(len(rows)) % 3 == 0, 2.0, 1.0)
    weighted = fit_bgnbd(*(rows[c] for c in cols), weights=weights)
    plain, copied = fit_bgnbd(*(rows[c] for c in cols)), fit_bgnbd(*(doubled[c] for c in cols))
    for name in ("r", "alpha", "a", "b"):
        assert getattr(weighted, name) == pytest.approx(getattr(copied, name), rel=1e-3), name
    assert weighted != plain


def test_a_failed_fit_leaves_the_column_out_and_says_why(repeat):
    frame = _frame(repeat.events, repeat.contacts)
    few = frame[(frame["split"] != "train") | (frame.index % 200 == 0)]  # under 20 buyers per training cut-off
    out, fitted, notes = fit_expected_purchases(few, ["purchase"], 30.0)
    assert fitted is None and COLUMN not in out.columns
    assert "too few for BG/NBD" in notes[0]


def test_the_stored_fit_round_trips():
    fitted = ExpectedPurchases.from_dict({"horizon_days": 30, "fitted_as_of": "2024-07-29",
                                          "params": {"purchase": {"r": 0.8, "alpha": 25.0, "a": 1.3, "b": 4.0}}})
    assert ExpectedPurchases.from_dict(fitted.to_dict()) == fitted and fitted.columns == [COLUMN]


def test_trained_with_it_scoring_rebuilds_the_column_and_the_same_probabilities_and_the_service_refuses_it(
        repeat, tmp_path):
    from propensity.features.store import Workspace, ingest_file
    from propensity.pipelines.synthetic import write_world
    from propensity.pipelines.training.as_trained import features_as_trained
    from propensity.pipelines.training.config import load_train_config
    from propensity.pipelines.training.scorer import load_scorer
    from propensity.pipelines.training.train import train

    ws = Workspace(tmp_path / "ws")
    for kind, path in write_world(repeat, tmp_path / "data").items():
        ingest_file(ws, kind, path)
    (tmp_path / "features.yaml").write_text(yaml.safe_dump(FEATURES.model_dump(mode="json")))
    rules = "benchmarks/worlds/repeat_rules.yaml"
    from pathlib import Path

    (tmp_path / "train.yaml").write_text(yaml.safe_dump({
        "rules": str(Path(__file__).resolve().parents[3] / rules), "features": "features.yaml",
        "grid": {"first": "2024-05-06", "last": "2024-08-26", "step_days": 14}, "horizon_days": 30,
        "recurring": True, "expected_purchases": True, "rule_inputs": False, "points_only_below": 50,
        "model": {"tune": False, "seed": 0}}))
    result = train(ws, load_train_config(tmp_path / "train.yaml"), track=False)
    assert COLUMN in result.scorer.feature_names
    assert result.summary["expected_purchases"][0].startswith("BG/NBD expected purchases in 30 days")
    scorer = load_scorer(result.scorer.save(tmp_path / "scorer"))
    assert scorer.expected_purchases == result.scorer.expected_purchases
    test = result.test_scores.reset_index(drop=True)
    con = ws.ibis_connection()
    spine = con.create_table("_t_spine", test[["contact_id", "as_of"]], temp=True)
    features = features_as_trained(con.table("events"), spine, scorer, con.table("contacts")).execute()
    features["as_of"] = pd.to_datetime(features["as_of"]).astype("datetime64[us]")
    features = test[["contact_id", "as_of"]].merge(features, on=["contact_id", "as_of"], validate="one_to_one")
    assert features[COLUMN].notna().mean() > 0.99
    np.testing.assert_allclose(scorer.score(features)["probability"], test["probability"], rtol=1e-9)
    from propensity.pipelines.serve.feature_plan import FeaturePlan

    with pytest.raises(ValueError, match="expected_purchases: false"):
        FeaturePlan.from_scorer(scorer)  # the service does not compute the column live
