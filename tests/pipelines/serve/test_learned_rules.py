"""The default champion (`rule_inputs: true`) scored live: its rule__* inputs from the service's rule state.

The model is the session's trained world (tests/worlds.py, trained with the shipped SaaS rules and
the train config's defaults); a part of its history is sent to a real server through
`propensity backfill`'s calls, and its live scores are compared with `propensity score --model`'s
on a workspace holding the same part.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import httpx
import numpy as np
import pandas as pd
import pytest

from propensity.features.spine import spine_from_frame
from propensity.features.store import Workspace, ingest_file
from propensity.pipelines.activation.backfill import backfill
from propensity.pipelines.explain.jobs import model_features
from propensity.pipelines.jobs import SpineChoice, resolve_spine, run_model_scores
from propensity.pipelines.rules import load_rules
from propensity.pipelines.rules.config import dump_rules
from propensity.pipelines.serve.app import ServiceSettings
from propensity.pipelines.serve.feature_plan import FeaturePlan
from propensity.pipelines.serve.rule_inputs import rules_difference
from propensity.pipelines.training.as_trained import features_as_trained
from tests.pipelines.serve.support import ROOT, WRITE_KEY, running_server

RULES_FILE = ROOT / "configs" / "rules" / "saas.yaml"
RULES = load_rules(RULES_FILE)


def _other_rules():
    """The SaaS rules with one activity worth more: other rule__* inputs than the model was trained on."""
    first = RULES.activities[0]
    return RULES.model_copy(update={"activities": (first.model_copy(update={"points": first.points + 5}),
                                                   *RULES.activities[1:])})


def test_rules_that_change_no_input_are_the_same_and_any_other_change_is_named():
    renamed = RULES.model_copy(update={"name": "saas_copy", "thresholds": {"pql": 80.0}})
    assert rules_difference(RULES, renamed, blends=True) is None  # name and thresholds are no input
    assert rules_difference(RULES, _other_rules(), blends=False) == (
        f"activity {RULES.activities[0].name!r}: points {RULES.activities[0].points!r} (trained) vs "
        f"{RULES.activities[0].points + 5!r} (served)")
    capped = RULES.model_copy(update={"activities": tuple(a.model_copy(update={"cap": 999.0})
                                                          for a in RULES.activities)})
    assert rules_difference(RULES, capped, blends=False) is None  # caps: read only by the blend
    assert "cap" in rules_difference(RULES, capped, blends=True)
    rescaled = RULES.model_copy(update={"scale": {0.0: 0.0, 500.0: 5.0}})
    assert "scale" in rules_difference(RULES, rescaled, blends=True)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def part(world, tmp_path_factory):
    """A part of the world (its first 160 contacts and their events) and a workspace holding it."""
    con = world.ws.ibis_connection()
    contacts = con.table("contacts").execute()
    ids = sorted(contacts["contact_id"].astype(str))[:160]
    contacts = contacts[contacts["contact_id"].astype(str).isin(ids)].reset_index(drop=True)
    events = con.table("events").execute()
    events = events[events["contact_id"].astype(str).isin(ids)].sort_values("ts", kind="stable")
    events = events.reset_index(drop=True)
    folder = tmp_path_factory.mktemp("rules_part")
    ws = Workspace(folder / "ws")
    for kind, frame in (("contacts", contacts), ("events", events)):
        frame.to_parquet(folder / f"{kind}.parquet")
        ingest_file(ws, kind, folder / f"{kind}.parquet")
    return contacts, events, ws


def _variants(scorer):
    """The model as trained, and the same model with its rule score blended in (alpha 0.5)."""
    blend = dict(scorer.blend or {"scale": 1.0, "centre": 2.0})
    return {"as trained": scorer, "blended": dataclasses.replace(scorer, blend={**blend, "alpha": 0.5})}


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["as trained", "blended"])
def test_the_default_champion_is_scored_live_as_propensity_score_scores_it(world, part, tmp_path, variant):
    contacts, events, ws = part
    scorer = _variants(world.result.scorer)[variant]
    plan = FeaturePlan.from_scorer(scorer)
    assert scorer.rule_inputs is not None and len(plan.rule_columns) > len(RULES.activities)  # + attributes
    if variant == "blended":
        assert scorer.blends_rules
    now = (pd.Timestamp(events["ts"].max()) + timedelta(hours=7)).to_pydatetime()
    as_of = now + timedelta(hours=3, microseconds=11)
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'serve.db'}", rules=RULES,
                               write_keys=frozenset({WRITE_KEY}), model=scorer, model_label=f"world {variant}")
    ids = sorted(contacts["contact_id"].astype(str))
    with running_server(settings, clock=lambda: now) as (base, _app), \
            httpx.Client(auth=(WRITE_KEY, ""), timeout=120) as http:
        backfill(contacts, [events], base, WRITE_KEY, batch_size=400)

        def served():
            return {c: http.get(f"{base}/v1/contacts/{c}/score", params={"as_of": as_of.isoformat()}).json()
                    for c in ids}

        first = served()
        # events stamped after as_of (the service takes up to a day ahead of its clock) move nothing there
        future = [{"type": "track", "userId": c, "event": kind, "messageId": f"future-{c}-{kind}",
                   "timestamp": (as_of + timedelta(hours=2)).isoformat() + "Z"}
                  for c in ids[:20] for kind in ("demo_requested", "trial_started", "email_open")]
        assert http.post(f"{base}/v1/batch", json={"batch": future}).json()["stored"] == len(future)
        again = served()
    assert all(b.get("learned_score") is not None for b in first.values()), next(iter(first.values()))
    for contact in ids[:20]:
        assert again[contact]["learned_score"] == first[contact]["learned_score"]
        assert again[contact]["rule_score"] == first[contact]["rule_score"]
    batch = run_model_scores(ws, SpineChoice(as_of=as_of), "world", world.model_name, scorer=scorer)
    batch = batch.set_index("contact_id")
    for contact, body in first.items():
        assert body["probability"] == pytest.approx(batch.loc[contact, "probability"], abs=1e-9), contact
        assert body["learned_score"] == pytest.approx(batch.loc[contact, "learned_score"], abs=1e-9), contact
        assert body["learned_band"] == batch.loc[contact, "band"]
        assert body["learned_reasons"] is not None
    learned = np.array([first[c]["learned_score"] for c in ids])
    assert len(np.unique(learned.round(9))) > 20  # not one constant
    # the rule inputs matter: the same features with the rule columns missing score otherwise
    con = ws.ibis_connection()
    features = features_as_trained(con.table("events"), resolve_spine(con, SpineChoice(as_of=as_of)), scorer,
                                   con.table("contacts")).execute().set_index("contact_id").loc[ids]
    blind = features.assign(**{c: np.nan for c in plan.rule_columns if not c.startswith("rule__attribute__")})
    if not scorer.blends_rules:  # (a blended model would fail on missing rule columns: they are read)
        moved = np.abs(scorer.score(blind[scorer.feature_names])["learned_score"].to_numpy() - learned)
        assert moved.max() > 1e-3


@pytest.mark.slow
def test_a_model_trained_with_other_rules_is_refused_by_name_naming_both_files_or_falls_back_as_champion(
        world, tmp_path, capsys):
    import mlflow
    from mlflow.tracking import MlflowClient

    from propensity.pipelines.cli.activation import _served_model
    from propensity.pipelines.project import Project
    from propensity.pipelines.training.tracking import (
        configure_tracking,
        log_scorer_model,
    )

    other, other_file = _other_rules(), tmp_path / "other.yaml"
    other_file.write_text(dump_rules(other))
    scorer = world.result.scorer
    with pytest.raises(ValueError, match="differ from the served rules 'saas'"):
        ServiceSettings(database_url="sqlite://", rules=other, write_keys=frozenset({WRITE_KEY}), model=scorer)
    # asked for by version: an error naming the model's own rules file and the served one
    project = Project(world.ws.path)
    with pytest.raises(ValueError) as refused:
        _served_model(project, world.version, world.model_name, False, other, other_file)
    message = " ".join(str(refused.value).split())
    carried = project.model(world.version, world.model_name).file("rules")
    assert carried is not None and str(carried) in message and str(other_file) in message
    assert "points" in message and f"serve it with --rules {carried}" in message
    # the same rules: served live
    assert _served_model(project, world.version, world.model_name, False, RULES, RULES_FILE) is not None
    # as the default champion: rule scores only, saying why
    ws = tmp_path / "ws"
    configure_tracking(ws, None, "propensity")
    example = world.ws.ibis_connection().table("contacts").head(5).execute()
    con = world.ws.ibis_connection()
    spine = spine_from_frame(con, pd.DataFrame({"contact_id": example["contact_id"],
                                                "as_of": [pd.Timestamp("2025-04-01")] * 5}))
    with mlflow.start_run():
        _, version = log_scorer_model(scorer, model_features(con, spine, scorer), "propensity")
    MlflowClient().set_registered_model_alias("propensity", "champion", version)
    assert _served_model(Project(ws), "champion", "propensity", False, other, other_file) is None
    said = " ".join(capsys.readouterr().err.split())
    assert "propensity@champion v1 is not scored live" in said and str(other_file) in said
    assert "serving rule scores only" in said
    assert _served_model(Project(ws), "champion", "propensity", False, RULES, RULES_FILE) is not None
