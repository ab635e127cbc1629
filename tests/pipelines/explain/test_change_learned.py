"""Why a learned score changed: the split sums exactly, and each component gets what caused it.

The session's trained world (tests/worlds.py) gives the model; the per-component tests apply it to
small hand-made event histories, so that exactly one thing changes between the two dates.
"""

import dataclasses
from datetime import datetime, timedelta

import ibis
import numpy as np
import pandas as pd
import pytest

from propensity.features.spine import spine_from_frame
from propensity.pipelines.explain.change_jobs import explain_change
from propensity.pipelines.explain.jobs import model_features
from propensity.pipelines.rules.config import load_rules
from tests.worlds import ROOT

pytestmark = pytest.mark.slow

SINCE, UNTIL = datetime(2025, 4, 1), datetime(2025, 5, 1)
RULES = load_rules(ROOT / "configs/rules/saas.yaml")


@pytest.fixture(scope="module")
def scorer(world):
    return world.result.scorer


def _scores_at(con, ids, at, scorer):
    spine = spine_from_frame(con, pd.DataFrame({"contact_id": ids, "as_of": [pd.Timestamp(at)] * len(ids)}))
    features = model_features(con, spine, scorer).set_index("contact_id").loc[ids].reset_index()
    return scorer.score(features)["learned_score"].to_numpy()


def test_learned_split_sums_to_the_change_and_its_ends_are_the_models_scores(world, scorer):
    con = world.ws.ibis_connection()
    ids = sorted(con.table("contacts").contact_id.execute())[:60]
    report = explain_change(world.ws, ids, SINCE, UNTIL, rules=RULES, scorer=scorer)
    split = report.learned
    assert split.residual() < 1e-9 and report.rule.residual() < 1e-9
    np.testing.assert_allclose(split.components().sum(axis=1), split.change, rtol=0, atol=1e-9)
    np.testing.assert_allclose(split.before, _scores_at(con, ids, SINCE, scorer), atol=1e-9)
    np.testing.assert_allclose(split.after, _scores_at(con, ids, UNTIL, scorer), atol=1e-9)
    components = split.components()
    assert components["new_events"].abs().max() > 0.05 and components["decay_expiry"].abs().max() > 0.05
    assert (components["fit"] == 0).all() and (components["model"] == 0).all()
    # within a step, the groups share the score difference exactly
    for name, frame in split.steps.items():
        np.testing.assert_allclose(frame.sum(axis=1), components[name], atol=1e-12)


# --------------------------------------------------------------------------- hand-made histories


@pytest.fixture(scope="module")
def contacts(world):
    """Three contacts with the world's attribute columns, no account and no creation date."""
    like = world.ws.table("contacts").head(3).reset_index(drop=True)
    return like.assign(contact_id=["h0", "h1", "h2"], account_id=pd.Series([None] * 3, dtype="string"),
                       created_at=pd.Series([pd.NaT] * 3, dtype="datetime64[us]"))


def _events(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["contact_id", "event_type", "ts"])
    return frame.assign(event_id=[f"e{i}" for i in range(len(frame))],
                        ts=pd.to_datetime(frame["ts"]).astype("datetime64[us]"), value=1.0,
                        account_id=pd.Series([None] * len(frame), dtype="string"),
                        properties=pd.Series([None] * len(frame), dtype="string"))


def _con(events, contacts):
    con = ibis.duckdb.connect()
    con.create_table("events", events)
    con.create_table("contacts", contacts)
    return con


def _history(contact: str, start: datetime) -> list:
    return [(contact, kind, start + timedelta(days=d, hours=h))
            for d, kind in enumerate(["page_view", "email_open", "feature_used", "demo_requested", "trial_started"] * 2)
            for h in (1, 5)]


def _components(report, contact):
    i = list(report.learned.contact_ids).index(contact)
    return report.learned.components().iloc[i], {k: v.iloc[i] for k, v in report.learned.steps.items()}, i


@pytest.fixture(scope="module")
def pair(scorer, contacts):
    """h0: events only between the dates; h1: events only before SINCE; and the split of both."""
    events = _events(_history("h0", SINCE + timedelta(days=15)) + _history("h1", SINCE - timedelta(days=12)))
    con = _con(events, contacts)
    return events, con, explain_change(con, ["h0", "h1"], SINCE, UNTIL, rules=RULES, scorer=scorer)


def test_only_new_events_land_in_new_events_on_the_types_that_happened(pair):
    report = pair[2]
    components, steps, i = _components(report, "h0")
    assert components["decay_expiry"] == 0 and components["fit"] == 0 and components["model"] == 0
    assert components["new_events"] == pytest.approx(report.learned.change[i], abs=1e-12)
    assert abs(report.learned.change[i]) > 0.05
    happened = {"page_view", "email_open", "feature_used", "demo_requested", "trial_started"}
    moved = {g for g, v in steps["new_events"].items() if v != 0}
    assert moved - happened <= {"all_activity", "tenure"}, moved
    assert moved & happened


def test_only_time_passing_lands_in_decay_expiry(pair):
    report = pair[2]
    components, steps, i = _components(report, "h1")
    assert components["new_events"] == 0 and components["fit"] == 0 and components["model"] == 0
    assert components["decay_expiry"] == pytest.approx(report.learned.change[i], abs=1e-12)
    assert abs(report.learned.change[i]) > 0.05
    seen = {"page_view", "email_open", "feature_used", "demo_requested", "trial_started"}
    aged = {g for g, v in steps["decay_expiry"].items() if v != 0}
    assert aged and aged - seen <= {"all_activity", "tenure"}, aged
    assert report.rule.components().iloc[i]["decay_expiry"] <= 0  # the rules only decay (here from the top of the scale)


def test_only_attribute_changes_land_in_fit_on_the_attribute(scorer, contacts):
    # a contact without events; before SINCE it had another value of one attribute
    con = _con(_events([("someone_else", "page_view", SINCE - timedelta(days=40))]), contacts)
    spine = spine_from_frame(con, pd.DataFrame({"contact_id": ["h2"], "as_of": [pd.Timestamp(UNTIL)]}))
    now = model_features(con, spine, scorer)
    # an earlier company size the model scores differently (the model decides which), found without the path
    sizes = [1, 20, 60, 300, 2000, 20000]
    trial = pd.concat([now.assign(company_size=v) for v in sizes], ignore_index=True)
    scores = scorer.score(trial)["learned_score"].to_numpy()
    moved = [v for v, score in zip(sizes, scores) if score != scorer.score(now)["learned_score"].iloc[0]]
    assert moved, "the model should react to company_size for some value"
    before = contacts.assign(company_size=np.where(contacts["contact_id"] == "h2", moved[0],
                                                   contacts["company_size"]).astype(contacts["company_size"].dtype))
    report = explain_change(con, ["h2"], SINCE, UNTIL, rules=RULES, scorer=scorer, contacts_before=before)
    components, steps, i = _components(report, "h2")
    assert components["new_events"] == 0 and components["decay_expiry"] == 0 and components["model"] == 0
    assert components["fit"] == pytest.approx(report.learned.change[i], abs=1e-12)
    assert abs(components["fit"]) > 0
    assert {g for g, v in steps["fit"].items() if v != 0} == {"company_size"}


def test_another_model_version_lands_in_the_model_part(scorer, pair):
    _, con, same = pair
    smaller = dataclasses.replace(scorer, best_iteration=max(1, scorer.best_iteration // 3))
    other = explain_change(con, ["h0", "h1"], SINCE, UNTIL, rules=RULES, scorer=smaller, scorer_before=scorer,
                           model_label="v1 -> v2")
    for step in ("decay_expiry", "new_events", "fit"):  # measured with the earlier model: unchanged
        np.testing.assert_array_equal(other.learned.components()[step], same.learned.components()[step])
    spine = spine_from_frame(con, pd.DataFrame({"contact_id": ["h0", "h1"], "as_of": [pd.Timestamp(UNTIL)] * 2}))
    features = model_features(con, spine, scorer)
    expected = smaller.score(features)["learned_score"].to_numpy() - scorer.score(features)["learned_score"].to_numpy()
    np.testing.assert_allclose(other.learned.components()["model"], expected, atol=1e-12)
    assert np.abs(expected).max() > 0.01
    assert other.learned.residual() < 1e-9
    assert other.learned.definition == "v1 -> v2"
    assert "model changed (v1 -> v2)" in set(other.learned.parts()["reason"])


def test_events_after_the_later_date_move_nothing(scorer, contacts, pair):
    events, _, base = pair
    late = _events(_history("h0", UNTIL) + _history("h1", UNTIL + timedelta(days=2)))
    late = late.assign(event_id=[f"late{i}" for i in range(len(late))])
    with_future = explain_change(_con(pd.concat([events, late], ignore_index=True), contacts), ["h0", "h1"],
                                 SINCE, UNTIL, rules=RULES, scorer=scorer)
    pd.testing.assert_frame_equal(base.summary(), with_future.summary())
    assert base.learned.residual() < 1e-9


def test_the_batch_form_takes_the_contacts_whose_learned_or_rule_band_changed(scorer, pair):
    from propensity.pipelines.explain.change_jobs import explain_changed_bands

    _, con, single = pair
    report = explain_changed_bands(con, SINCE, UNTIL, rules=RULES, scorer=scorer)
    summary = single.summary()
    moved = sorted(set(summary.loc[summary["band_before"] != summary["band_after"], "contact_id"]))
    assert moved, "one of the two contacts should change band"
    assert list(report.learned.contact_ids) == moved == list(report.rule.contact_ids)
    both = report.summary()
    np.testing.assert_allclose(both[["decay_expiry", "new_events", "fit", "rules", "model"]].sum(axis=1),
                               both["change"], atol=1e-9)
