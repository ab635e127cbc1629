"""`push --to hubspot` with the real hubspot-api-client against a local HubSpot (crm_fakes.py)."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from propensity.pipelines.activation.crm.limits import crm_unavailable

if (missing := crm_unavailable()) is not None:
    pytest.skip(missing, allow_module_level=True)

from crm_fakes import hubspot_server, reply

from propensity.pipelines.activation.push import PushError, traits_from_scores
from propensity.pipelines.cli import main
from propensity.pipelines.project import Project

TOKEN = "pat-na1-11111111-2222-3333-4444-5555deadbeef"


@pytest.fixture
def hubspot():
    server, state = hubspot_server(TOKEN)
    server.start()
    yield server, state
    server.stop()


def contacts_csv(tmp_path, n=5):
    path = tmp_path / "contacts.csv"
    pd.DataFrame({"contact_id": [f"c{i}" for i in range(n)], "email": [f"c{i}@example.com" for i in range(n)],
                  "account_id": [f"a{i % 2}" for i in range(n)]}).to_csv(path, index=False)
    return path


def scores(n=5, bump=0.0):
    return pd.DataFrame({"contact_id": [f"c{i}" for i in range(n)], "as_of": pd.Timestamp("2026-11-01"),
                         "rule_score": [round(0.9 * i + bump, 2) for i in range(n)],
                         "band": ["hot" if i > 2 else "cold" for i in range(n)],
                         "points__demo_request": [10.0 * i for i in range(n)],
                         "points__pricing_visit": [5.0] * n})


@pytest.fixture
def project(tmp_path):
    proj = Project(tmp_path / "ws")
    proj.ingest("contacts", contacts_csv(tmp_path))
    return proj


def env(server):
    return {"HUBSPOT_ACCESS_TOKEN": TOKEN, "HUBSPOT_API_URL": server.url}


def push(project, server, frame, **kwargs):
    return project.push_crm("hubspot", traits_from_scores(frame), environ=env(server), **kwargs)


def test_create_properties_dry_run_creates_nothing_then_creates_group_and_typed_properties(project, hubspot):
    server, state = hubspot
    report = push(project, server, scores(), dry_run=True, create_properties=True)
    assert [p.name for p in report.properties if not p.exists] == [
        "propensity_score", "propensity_band", "propensity_probability", "propensity_top_reasons",
        "propensity_change_reason", "propensity_contact_id", "propensity_score", "propensity_band", "propensity_contacts_scored",
        "propensity_top_contact_id", "propensity_account_id"]
    assert server.calls("POST", r"/crm/v3/properties/.*") == [] and state.upserted == []

    push(project, server, scores(), create_properties=True)
    assert "propensity" in state.groups["contacts"] and "propensity" in state.groups["companies"]
    score = state.properties["contacts"]["propensity_score"]
    assert (score["type"], score["fieldType"], score["groupName"]) == ("number", "number", "propensity")
    assert state.properties["companies"]["propensity_account_id"]["hasUniqueValue"] is True
    again = push(project, server, scores(), dry_run=True, create_properties=True)
    assert all(p.exists for p in again.properties)


def test_what_arrives_is_what_was_sent_and_an_unchanged_push_sends_nothing(project, hubspot):
    server, state = hubspot
    report = push(project, server, scores(), create_properties=True)
    contacts = {o["properties"]["email"]: o["properties"] for o in state.objects["contacts"].values()}
    assert sorted(contacts) == [f"c{i}@example.com" for i in range(5)]
    c3 = contacts["c3@example.com"]
    assert c3 == {"email": "c3@example.com", "propensity_score": "2.7", "propensity_band": "hot",
                  "propensity_top_reasons": "demo_request; pricing_visit", "propensity_contact_id": "c3"}
    companies = {o["properties"]["propensity_account_id"]: o["properties"] for o in state.objects["companies"].values()}
    # a0 holds c0, c2, c4 (best: c4 at 3.6), a1 holds c1, c3 (best: c3 at 2.7)
    assert companies["a0"]["propensity_score"] == "3.6" and companies["a0"]["propensity_contacts_scored"] == "3"
    assert companies["a1"]["propensity_top_contact_id"] == "c3" and companies["a1"]["propensity_band"] == "hot"
    assert [r.sent for r in report.reports] == [5, 2]

    before = len(server.requests)
    again = push(project, server, scores())
    assert [r.sent for r in again.reports] == [0, 0] and len(server.requests) == before

    changed = scores()
    changed.loc[1, "rule_score"] = 4.9  # c1 changes, and so does its account a1's best score
    third = push(project, server, changed)
    assert [r.sent for r in third.reports] == [1, 1]
    assert state.upserted[-2:] == [("contacts", "c1@example.com"), ("companies", "a1")]


def test_429_with_retry_after_is_waited_for_and_retried(project, hubspot):
    server, _ = hubspot
    push(project, server, scores(), create_properties=True, dry_run=False)
    slept = []
    first = {"done": False}

    def throttle(request, index):
        if request.path.endswith("/batch/upsert") and not first["done"]:
            first["done"] = True
            return reply(429, {"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                               "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"}, {"Retry-After": "7"})
        return None

    server.inject = throttle
    report = push(project, server, scores(bump=0.1), sleep=slept.append)
    assert 7.0 in slept  # HubSpot's Retry-After, not our own backoff
    assert report.retries == 1 and [r.sent for r in report.reports] == [5, 2]


def test_a_partial_batch_error_records_the_rest_and_the_next_push_sends_only_the_refused(project, hubspot):
    server, state = hubspot
    push(project, server, scores(), create_properties=True)
    state.refuse = {"c2@example.com"}
    report = push(project, server, scores(bump=0.2))
    assert list(report.reports[0].refused) == ["c2"] and report.reports[0].sent == 4
    state.refuse = set()
    n = len(state.upserted)
    again = push(project, server, scores(bump=0.2))
    assert again.reports[0].sent == 1 and state.upserted[n:][0] == ("contacts", "c2@example.com")


def test_a_failure_midway_resumes_without_sending_anything_twice(tmp_path, project, hubspot):
    server, state = hubspot
    (project.ws.layout.configs).mkdir(parents=True, exist_ok=True)
    (project.ws.layout.configs / "crm.yaml").write_text("hubspot:\n  batch_size: 2\n  companies: false\n")
    push(project, server, scores(n=2), create_properties=True)  # properties, and c0, c1 once
    state.upserted.clear()
    upserts = {"n": 0}

    def fail_third(request, index):
        if request.path.endswith("/batch/upsert"):
            upserts["n"] += 1
            if upserts["n"] == 2:
                return reply(400, {"status": "error", "category": "VALIDATION_ERROR", "message": "boom"})
        return None

    server.inject = fail_third
    with pytest.raises(PushError, match=r"batch 2/3 failed.*HTTP 400.*2 contacts were acknowledged"):
        push(project, server, scores(bump=0.5))
    server.inject = None
    report = push(project, server, scores(bump=0.5))
    assert report.reports[0].sent == 3 and report.reports[0].unchanged == 2
    sent = [key for _, key in state.upserted]
    assert sorted(sent) == [f"c{i}@example.com" for i in range(5)] and len(sent) == len(set(sent))


def test_contacts_without_an_email_are_reported_not_sent(tmp_path, hubspot):
    server, state = hubspot
    proj = Project(tmp_path / "ws2")
    path = tmp_path / "c.csv"
    pd.DataFrame({"contact_id": ["c0", "c1"], "email": ["c0@example.com", None], "account_id": ["a0", "a0"]}).to_csv(
        path, index=False)
    proj.ingest("contacts", path)
    report = push(proj, server, scores(n=2), create_properties=True)
    assert report.skipped == {"c1": "no email in the contacts table to match on"}
    assert [k for t, k in state.upserted if t == "contacts"] == ["c0@example.com"]


def test_the_token_appears_in_no_output_even_when_the_server_echoes_it(tmp_path, hubspot, monkeypatch, capsys,
                                                                        caplog):
    server, state = hubspot
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("HUBSPOT_API_URL", server.url)
    ws = ["--workspace", str(tmp_path / "ws")]
    assert main([*ws, "ingest", "contacts", str(contacts_csv(tmp_path))]) == 0
    path = tmp_path / "scores.parquet"
    scores().to_parquet(path)
    caplog.set_level(logging.DEBUG)
    assert main([*ws, "push", "--to", "hubspot", "--from", str(path), "--create-properties", "--dry-run"]) == 0
    assert main([*ws, "push", "--to", "hubspot", "--from", str(path), "--create-properties"]) == 0
    state.token = "another-token"  # the fake now answers 401 and echoes the Authorization header it got
    scores(bump=0.4).to_parquet(path)
    assert main([*ws, "push", "--to", "hubspot", "--from", str(path)]) == 1
    # refused before any record: reading the properties (an answer the client turns into models)
    assert main([*ws, "push", "--to", "hubspot", "--from", str(path), "--create-properties"]) == 1
    captured = capsys.readouterr()
    assert "HTTP 401" in captured.err and "Authentication credentials not found" in captured.err
    everything = captured.out + captured.err + caplog.text
    assert TOKEN not in everything and "would create" in captured.out and "sent 5" in " ".join(captured.out.split())


def test_the_daily_limit_counts_requests_of_earlier_runs_and_stops_the_push_resumably(project, hubspot):
    server, _ = hubspot
    push(project, server, scores(), create_properties=True)  # 4 reads/creates per object type + 2 upserts
    used = len(server.requests)
    project.ws.layout.configs.mkdir(parents=True, exist_ok=True)
    # the day's budget is what was used so far plus one: the contacts go, the companies must wait
    (project.ws.layout.configs / "crm.yaml").write_text(f"hubspot:\n  daily_limit: {used + 1}\n")
    with pytest.raises(PushError, match=r"daily limit of .* requests is spent .*hubspot-requests\.sqlite"):
        push(project, server, scores(bump=0.3))
    assert len(server.requests) == used + 1  # the request log in the workspace counted the first run's
    (project.ws.layout.configs / "crm.yaml").write_text("hubspot:\n  daily_limit: 250000\n")
    report = push(project, server, scores(bump=0.3))
    assert [r.sent for r in report.reports] == [0, 2]  # the contacts were recorded: only the companies are left


def test_a_dry_run_writes_every_request_per_object_and_sends_and_records_nothing(tmp_path, project, hubspot):
    import json

    server, _ = hubspot
    out = tmp_path / "preview.jsonl"
    report = push(project, server, scores(), dry_run=True, preview_out=out)
    contacts = [json.loads(line) for line in out.read_text().splitlines()]
    companies = [json.loads(line) for line in (tmp_path / "preview.companies.jsonl").read_text().splitlines()]
    assert contacts[0]["url"].endswith("/crm/v3/objects/contacts/batch/upsert")
    assert [i["id"] for i in contacts[0]["json"]["inputs"]] == [f"c{i}@example.com" for i in range(5)]
    assert {i["id"] for i in companies[0]["json"]["inputs"]} == {"a0", "a1"}
    assert server.requests == [] and [r.sent for r in report.reports] == [0, 0]
    assert TOKEN not in out.read_text()
    again = push(project, server, scores(), dry_run=True)
    assert again.reports[0].unchanged == 0  # nothing was recorded by the dry run


def test_held_out_contacts_reach_neither_their_record_nor_their_accounts_roll_up(tmp_path, hubspot):
    from propensity.pipelines.activation.holdout import HoldoutConfig, held_out_by_hash

    server, state = hubspot
    holdout = HoldoutConfig(experiment="crm-test", share=0.5)
    proj = Project(tmp_path / "ws")
    proj.ingest("contacts", contacts_csv(tmp_path, n=12))
    frame = scores(n=12)
    held = {f"c{i}" for i in range(12) if held_out_by_hash("crm-test", f"c{i}", 0.5)}
    assert 0 < len(held) < 12  # the hash splits these ids (else the test would prove nothing)
    report = push(proj, server, frame, create_properties=True, holdout=holdout)
    sent = {k.split("@")[0] for t, k in state.upserted if t == "contacts"}
    assert sent == {f"c{i}" for i in range(12)} - held and report.reports[0].held_out == len(held)
    companies = {o["properties"]["propensity_account_id"]: o["properties"] for o in state.objects["companies"].values()}
    for account in ("a0", "a1"):
        members = {f"c{i}" for i in range(12) if i % 2 == int(account[1])} - held
        assert companies[account]["propensity_contacts_scored"] == str(len(members))


def test_the_reason_for_the_last_change_is_pushed_from_explain_since_output(tmp_path, hubspot, monkeypatch):
    server, state = hubspot
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("HUBSPOT_API_URL", server.url)
    ws = ["--workspace", str(tmp_path / "ws")]
    assert main([*ws, "ingest", "contacts", str(contacts_csv(tmp_path))]) == 0
    scores().to_parquet(tmp_path / "scores.parquet")
    # the columns `propensity explain --since ... --out` writes (pipelines/explain/change.py summary)
    pd.DataFrame({"contact_id": ["c1", "c2", "c1"], "score": ["rule", "rule", "learned"],
                  "since": "2026-10-01", "until": "2026-11-01", "before": [0.1, 1.8, 0.0],
                  "after": [0.9, 1.8, 0.5], "change": [0.8, 0.0, 0.5],
                  "reason_1": ["new events: demo request (+0.8)", None, "model"]}).to_csv(tmp_path / "ch.csv",
                                                                                         index=False)
    assert main([*ws, "push", "--to", "hubspot", "--from", str(tmp_path / "scores.parquet"), "--changes",
                 str(tmp_path / "ch.csv"), "--create-properties"]) == 0
    contacts = {o["properties"]["email"]: o["properties"] for o in state.objects["contacts"].values()}
    assert contacts["c1@example.com"]["propensity_change_reason"] == "+0.80 since 2026-10-01: new events: demo request (+0.8)"
    assert "propensity_change_reason" not in contacts["c2@example.com"]  # its score did not move
