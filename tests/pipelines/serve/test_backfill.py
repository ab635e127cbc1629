"""`propensity backfill`: a workspace's history sent to a running service scores as the batch does."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pandas as pd
import pytest

from propensity.pipelines.activation.backfill import event_calls, request_batches
from propensity.pipelines.project import Project
from propensity.pipelines.rules import load_rules
from propensity.pipelines.serve.app import ServiceSettings
from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world
from tests.pipelines.serve.support import ROOT, WRITE_KEY, running_server

RULES = ROOT / "configs" / "rules" / "saas.yaml"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    data = tmp_path_factory.mktemp("backfill_world")
    paths = write_world(generate_world(WorldConfig(contacts=150, days=60, seed=11)), data, fmt="parquet")
    project = Project(tmp_path_factory.mktemp("backfill_ws"))
    for kind in ("contacts", "events"):
        project.ingest(kind, paths[kind])
    return project


def test_batches_stay_under_the_request_limits():
    calls = [{"type": "track", "messageId": str(i), "properties": {"x": "y" * 50}} for i in range(1000)]
    batches = list(request_batches(calls, max_calls=300, max_bytes=20_000))
    assert [c for b in batches for c in b] == calls
    assert all(len(b) <= 300 and sum(len(str(c)) for c in b) < 25_000 for b in batches)


@pytest.mark.slow
def test_a_backfilled_service_scores_every_contact_as_propensity_score_and_a_rerun_stores_nothing(
        workspace, tmp_path):
    events = workspace.ws.ibis_connection().table("events").execute()
    now = (pd.Timestamp(events["ts"].max()) + timedelta(hours=7)).to_pydatetime()
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'serve.db'}", rules=load_rules(RULES),
                               write_keys=frozenset({WRITE_KEY}))
    with running_server(settings, clock=lambda: now) as (base, _app):
        first = workspace.backfill(base, WRITE_KEY, batch_size=400)
        again = workspace.backfill(base, WRITE_KEY, batch_size=400)
        with httpx.Client(auth=(WRITE_KEY, ""), timeout=60) as http:
            served = {c: http.get(f"{base}/v1/contacts/{c}/score").json()
                      for c in sorted(events["contact_id"].unique())}
    assert (first.events, first.stored, first.duplicates) == (len(events), len(events), 0)
    assert first.contacts == 150 and first.requests > 1
    assert (again.stored, again.duplicates) == (0, len(events))  # messageId = event_id
    batch, _ = workspace.score(now, rules=RULES)
    batch = batch.set_index("contact_id")
    for contact, body in served.items():
        assert body["rule_score"] == pytest.approx(batch.loc[contact, "rule_score"], abs=1e-9), contact
        assert body["band"] == batch.loc[contact, "band"]
    assert batch.loc[list(served), "rule_score"].nunique() > 5  # the history spreads over the scale


def test_events_keep_their_ids_values_and_accounts_as_calls():
    frame = pd.DataFrame({"event_id": ["e1"], "contact_id": ["c1"], "event_type": ["demo"],
                          "ts": [pd.Timestamp("2025-01-02 03:04:05.000006")], "value": [2.5],
                          "account_id": ["a1"], "properties": ['{"plan": "pro"}']})
    (call,) = event_calls(frame)
    assert call == {"type": "track", "messageId": "e1", "userId": "c1", "event": "demo",
                    "timestamp": "2025-01-02T03:04:05.000006Z", "properties": {"plan": "pro", "value": 2.5},
                    "context": {"groupId": "a1"}}


def test_a_service_that_is_not_there_is_a_message_not_a_traceback(workspace):
    with pytest.raises(RuntimeError, match="cannot reach the service at http://127.0.0.1:9"):
        workspace.backfill("http://127.0.0.1:9", WRITE_KEY, attempts=1)  # retried 6 times by default
