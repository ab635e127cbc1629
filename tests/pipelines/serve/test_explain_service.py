"""`GET /v1/contacts/{id}/explain`: `propensity explain`'s answer from the service's memory.

The model is the session's trained world (tests/worlds.py: the train config's defaults, so it reads
the rules' columns); a part of its history goes to a real server through `propensity backfill`'s
calls, and the endpoint's answer is compared with `explain_one` (the `propensity explain CONTACT`
job) on a workspace holding the same part, at the same instant.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import numpy as np
import pandas as pd
import pytest

from propensity.features.store import Workspace, ingest_file
from propensity.pipelines.activation.backfill import backfill
from propensity.pipelines.explain import top_reasons
from propensity.pipelines.explain.jobs import explain_one
from propensity.pipelines.rules import load_rules
from propensity.pipelines.rules.score import scale_points
from propensity.pipelines.serve.app import ServiceSettings
from tests.pipelines.serve.support import ROOT, WRITE_KEY, running_server

RULES = load_rules(ROOT / "configs" / "rules" / "saas.yaml")
AUTH = (WRITE_KEY, "")


@pytest.fixture(scope="module")
def part(world, tmp_path_factory):
    """The world's first 60 contacts and their events, and a workspace holding just them."""
    con = world.ws.ibis_connection()
    contacts = con.table("contacts").execute()
    ids = sorted(contacts["contact_id"].astype(str))[:60]
    contacts = contacts[contacts["contact_id"].astype(str).isin(ids)].reset_index(drop=True)
    events = con.table("events").execute()
    events = events[events["contact_id"].astype(str).isin(ids)].sort_values("ts", kind="stable")
    events = events.reset_index(drop=True)
    folder = tmp_path_factory.mktemp("explain_part")
    ws = Workspace(folder / "ws")
    for kind, frame in (("contacts", contacts), ("events", events)):
        frame.to_parquet(folder / f"{kind}.parquet")
        ingest_file(ws, kind, folder / f"{kind}.parquet")
    return contacts, events, ws


def _explained(http: httpx.Client, base: str, contact: str, as_of: datetime) -> dict:
    answer = http.get(f"{base}/v1/contacts/{contact}/explain", params={"as_of": as_of.isoformat()})
    assert answer.status_code == 200, answer.text
    return answer.json()


def _points(body: dict) -> dict[str, float]:
    return {g["group"]: g["points"] for g in body["learned"]}


@pytest.mark.slow
def test_the_explain_endpoint_answers_as_propensity_explain_on_the_same_events_and_instant(world, part, tmp_path):
    contacts, events, ws = part
    scorer = world.result.scorer
    assert scorer.rule_inputs is not None  # its rule__* columns come from the service's rule state
    now = (pd.Timestamp(events["ts"].max()) + timedelta(hours=7)).to_pydatetime()
    as_of = now + timedelta(hours=3, microseconds=11)
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'serve.db'}", rules=RULES,
                               write_keys=frozenset({WRITE_KEY}), model=scorer, model_label="world v1",
                               model_name=world.model_name, model_version=world.version)
    counts = events["contact_id"].astype(str).value_counts()
    asked = [*counts.index[:4], *counts.index[-2:]]  # the busiest contacts and two quiet ones
    with running_server(settings, clock=lambda: now) as (base, _app), httpx.Client(auth=AUTH, timeout=120) as http:
        backfill(contacts, [events], base, WRITE_KEY, batch_size=400)
        served = {c: _explained(http, base, c, as_of) for c in asked}
        scores = {c: http.get(f"{base}/v1/contacts/{c}/score", params={"as_of": as_of.isoformat(),
                                                                        "learned_split": "false"}).json()
                  for c in asked}
        # events stamped after as_of (the service takes up to a day ahead of its clock) move nothing there
        later = as_of + timedelta(hours=2)
        future = [{"type": "track", "userId": c, "event": kind, "messageId": f"future-{c}-{kind}",
                   "timestamp": later.isoformat() + "Z"}
                  for c in asked for kind in ("demo_requested", "trial_started", "feature_used")]
        assert http.post(f"{base}/v1/batch", json={"batch": future}).json()["stored"] == len(future)
        unmoved = {c: _explained(http, base, c, as_of) for c in asked}
        # at an instant after them they count, as GET score counts them
        moved = {c: _explained(http, base, c, later + timedelta(minutes=1)) for c in asked}
        moved_scores = {c: http.get(f"{base}/v1/contacts/{c}/score", params={
            "as_of": (later + timedelta(minutes=1)).isoformat(), "learned_split": "false"}).json() for c in asked}
    assert unmoved == served
    for contact in asked:
        body, expected = served[contact], explain_one(ws, contact, as_of, scorer, RULES)
        assert body["as_of"] == as_of.isoformat() == expected.as_of.isoformat()
        assert body["model"] == {"label": "world v1", "name": world.model_name, "version": world.version}
        assert body["learned_score"] == pytest.approx(expected.learned_score, abs=1e-9), contact
        assert body["learned_score"] == pytest.approx(scores[contact]["learned_score"], abs=1e-9), contact
        assert body["baseline"] == pytest.approx(expected.baseline, abs=1e-12)
        # the groups, their 0-5 points and log-odds, in the CLI's order (largest |points| first)
        table = expected.learned
        assert [g["group"] for g in body["learned"]] == table["group"].tolist()
        assert [g["facts"] for g in body["learned"]] == table["facts"].tolist()
        np.testing.assert_allclose([g["points"] for g in body["learned"]], table["points"], rtol=0, atol=1e-9)
        np.testing.assert_allclose([g["logodds"] for g in body["learned"]], table["logodds"], rtol=0, atol=1e-9)
        assert sum(_points(body).values()) == pytest.approx(body["learned_score"] - body["baseline"], abs=1e-12)
        assert body["explained"] == pytest.approx(body["learned_score"] - body["baseline"], abs=1e-15)
        # the CLI's top reasons (`explain --all`'s reason_k columns) from the same explanation
        want = top_reasons(expected.explanation, 3).iloc[0]
        assert [r["reason"] for r in body["top_reasons"]] == [want[f"reason_{k}"] for k in (1, 2, 3)]
        np.testing.assert_allclose([r["points"] for r in body["top_reasons"]],
                                   [want[f"reason_{k}_points"] for k in (1, 2, 3)], rtol=0, atol=1e-9)
        # the rule score, point by point, as `propensity explain` breaks it down
        rules = body["rules"]
        assert rules["name"] == RULES.name and rules["band"] == scores[contact]["band"]
        assert rules["rule_score"] == pytest.approx(expected.rule_score, abs=1e-9)
        assert rules["rule_score"] == pytest.approx(scores[contact]["rule_score"], abs=1e-9)
        assert [r["rule"] for r in rules["breakdown"]] == expected.rules["rule"].tolist()
        np.testing.assert_allclose([r["points"] for r in rules["breakdown"]], expected.rules["points"], atol=1e-9)
        np.testing.assert_allclose([r["score_points"] for r in rules["breakdown"]], expected.rules["score_points"],
                                   atol=1e-9)
        assert len(body["comparison"]) == len(expected.comparison)
        # later: the new events count, the same as in GET score; the points still sum exactly
        after = moved[contact]
        assert after["learned_score"] == pytest.approx(moved_scores[contact]["learned_score"], abs=1e-9)
        assert after["rules"]["rule_score"] == pytest.approx(moved_scores[contact]["rule_score"], abs=1e-9)
        assert sum(_points(after).values()) == pytest.approx(after["learned_score"] - after["baseline"], abs=1e-12)
    assert any(moved[c]["learned_score"] != served[c]["learned_score"] for c in asked)  # the events mattered
    assert len({round(b["learned_score"], 9) for b in served.values()}) > 3  # not one constant
    assert all(any(abs(p) > 1e-6 for p in _points(b).values()) for b in served.values())


def test_explain_says_what_it_cannot_answer_unknown_contact_no_model_bad_key_and_bad_as_of(tmp_path):
    now = datetime(2026, 3, 1, 12)
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'serve.db'}", rules=RULES,
                               write_keys=frozenset({WRITE_KEY}))
    calls = [{"type": "identify", "userId": "u1", "traits": {"company_size": 800, "industry": "software"}},
             *({"type": "track", "userId": "u1", "event": kind, "messageId": f"m{i}",
                "timestamp": (now - timedelta(days=i + 1)).isoformat() + "Z"}
               for i, kind in enumerate(["demo_requested", "trial_started", "feature_used", "email_open"]))]
    with running_server(settings, clock=lambda: now) as (base, _app), httpx.Client(auth=AUTH, timeout=60) as http:
        assert http.post(f"{base}/v1/batch", json={"batch": calls}).json()["stored"] == 4
        missing = http.get(f"{base}/v1/contacts/nobody/explain")
        rules_only = http.get(f"{base}/v1/contacts/u1/explain")
        score = http.get(f"{base}/v1/contacts/u1/score").json()
        unauthorised = httpx.get(f"{base}/v1/contacts/u1/explain", auth=("wrong", ""))
        unreadable = http.get(f"{base}/v1/contacts/u1/explain", params={"as_of": "yesterday"})
        past = http.get(f"{base}/v1/contacts/u1/explain", params={"as_of": (now - timedelta(days=1)).isoformat()})
    assert missing.status_code == 404 and missing.json()["message"] == "no events or traits for contact 'nobody'"
    # no model: 409 saying so, with the rule score's own breakdown (the same points as GET score)
    assert rules_only.status_code == 409
    body = rules_only.json()
    assert body["code"] == "no_model" and "rules only" in body["message"]
    assert body["as_of"] == score["as_of"]
    assert body["rules"]["rule_score"] == score["rule_score"] and body["rules"]["band"] == score["band"]
    breakdown = {r["rule"]: r for r in body["rules"]["breakdown"]}
    assert {name: r["points"] for name, r in breakdown.items()} == score["points_by_rule"]
    zero = float(scale_points(np.array([0.0]), RULES)[0])
    assert sum(r["score_points"] for r in breakdown.values()) == pytest.approx(score["rule_score"] - zero, abs=1e-9)
    assert breakdown["demo_request"]["points"] > 0 and breakdown["company_size_target"]["points"] > 0
    assert unauthorised.status_code == 401
    assert unreadable.status_code == 400 and "field 'as_of'" in unreadable.json()["message"]
    assert past.status_code == 400 and "back in time" in past.json()["message"]
