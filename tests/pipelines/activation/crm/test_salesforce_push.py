"""`push --to salesforce` with the real simple-salesforce against a local Salesforce over TLS (crm_fakes.py)."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from propensity.pipelines.activation.crm.limits import crm_unavailable

if (missing := crm_unavailable()) is not None:
    pytest.skip(missing, allow_module_level=True)

from crm_fakes import reply, salesforce_server, self_signed_certificate

from propensity.pipelines.activation.push import PushError, traits_from_scores
from propensity.pipelines.cli import main
from propensity.pipelines.project import Project

TOKEN = "00D5g000004XyZ!AQ0AQFakeSessionTokenForTests.s3cr3t"
EXT = "Propensity_Contact_Id__c"


@pytest.fixture
def salesforce(tmp_path_factory, monkeypatch):
    cert = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert[0])  # requests' own setting: trust the local server's certificate
    server, state = salesforce_server(TOKEN, cert)
    server.start()
    yield server, state
    server.stop()


def contacts_csv(tmp_path, n=5):
    path = tmp_path / "contacts.csv"
    pd.DataFrame({"contact_id": [f"c{i}" for i in range(n)], "account_id": [f"a{i % 2}" for i in range(n)],
                  "salesforce_object": ["Lead" if i == 4 else "Contact" for i in range(n)]}).to_csv(path, index=False)
    return path


def seed(state, n=5):
    """The people and accounts already in Salesforce (an upsert that would create one needs its required fields)."""
    for i in range(n):
        sobject = "Lead" if i == 4 else "Contact"
        state.records[sobject][f"id{i}"] = {"Id": f"id{i}", "LastName": f"Person {i}", EXT: f"c{i}"}
    for a in ("a0", "a1"):
        state.records["Account"][f"acc{a}"] = {"Id": f"acc{a}", "Name": a.upper(), "Propensity_Account_Id__c": a}


def scores(n=5, bump=0.0):
    return pd.DataFrame({"contact_id": [f"c{i}" for i in range(n)], "as_of": pd.Timestamp("2026-11-01"),
                         "rule_score": [round(0.9 * i + bump, 2) for i in range(n)],
                         "band": ["hot" if i > 2 else "cold" for i in range(n)],
                         "points__demo_request": [10.0 * i for i in range(n)]})


@pytest.fixture
def project(tmp_path):
    proj = Project(tmp_path / "ws")
    proj.ingest("contacts", contacts_csv(tmp_path))
    return proj


def push(project, server, frame, **kwargs):
    env = {"SALESFORCE_INSTANCE_URL": server.url, "SALESFORCE_ACCESS_TOKEN": TOKEN}
    return project.push_crm("salesforce", traits_from_scores(frame), environ=env, **kwargs)


def test_create_properties_makes_typed_custom_fields_through_the_tooling_api(project, salesforce):
    server, state = salesforce
    dry = push(project, server, scores(), dry_run=True, create_properties=True)
    assert state.created_fields == [] and sum(not p.exists for p in dry.properties) == 17
    seed(state)
    push(project, server, scores(), create_properties=True)
    made = {(o, n): m for o, n, m in state.created_fields}
    assert made[("Contact", EXT)] == {"type": "Text", "label": "Propensity contact id", "length": 80,
                                      "externalId": True, "unique": True, "caseSensitive": False}
    assert made[("Lead", "Propensity_Score__c")]["type"] == "Number"
    assert ("Account", "Propensity_Account_Id__c") in made
    again = push(project, server, scores(), dry_run=True, create_properties=True)
    assert all(p.exists for p in again.properties)


def test_contacts_leads_and_accounts_receive_what_was_sent_through_collections(project, salesforce):
    server, state = salesforce
    push(project, server, scores(), create_properties=True, dry_run=True)
    seed(state)
    report = push(project, server, scores(), create_properties=True)
    c3 = state.records["Contact"]["id3"]
    assert (c3["Propensity_Score__c"], c3["Propensity_Band__c"], c3["Propensity_Top_Reasons__c"]) == (
        2.7, "hot", "demo_request")
    assert state.records["Lead"]["id4"]["Propensity_Score__c"] == 3.6
    assert state.records["Account"]["acca0"]["Propensity_Top_Contact_Id__c"] == "c4"
    assert [(r.destination, r.sent) for r in report.reports] == [
        ("salesforce:Contact", 4), ("salesforce:Lead", 1), ("salesforce:Account", 2)]
    assert len(server.calls("PATCH", r".*/composite/sobjects/Contact/" + EXT)) == 1
    before = len(server.requests)
    again = push(project, server, scores())
    assert [r.sent for r in again.reports] == [0, 0, 0] and len(server.requests) == before


def test_a_bulk_push_goes_through_bulk_api_2_and_refused_records_are_tried_again(tmp_path, project, salesforce):
    server, state = salesforce
    project.ws.layout.configs.mkdir(parents=True, exist_ok=True)
    (project.ws.layout.configs / "crm.yaml").write_text("salesforce:\n  bulk_threshold: 2\n  bulk_poll_seconds: 0\n  accounts: false\n")
    push(project, server, scores(), create_properties=True, dry_run=True)
    seed(state)
    del state.records["Contact"]["id2"]  # not in Salesforce: an upsert would create it, without its LastName
    push(project, server, scores(), create_properties=True)  # fields first (describe + tooling)
    report = push(project, server, scores(bump=0.1))
    contact = report.reports[0]
    assert contact.destination == "salesforce:Contact" and list(contact.refused) == ["c2"]
    assert "REQUIRED_FIELD_MISSING" in contact.refused["c2"] and contact.sent == 3
    assert server.calls("POST", r".*/jobs/ingest/?")  # Contact (4 pending) by Bulk API 2.0
    assert not server.calls("PATCH", r".*/composite/sobjects/Contact/.*")  # the one Lead by sObject Collections
    state.records["Contact"]["id2"] = {"Id": "id2", "LastName": "Person 2", EXT: "c2"}
    n = len(state.upserted)
    again = push(project, server, scores(bump=0.1))
    assert again.reports[0].sent == 1 and state.upserted[n:] == [("Contact", "c2")]


def test_a_failure_midway_resumes_and_the_daily_reserve_stops_a_push(project, salesforce):
    server, state = salesforce
    project.ws.layout.configs.mkdir(parents=True, exist_ok=True)
    (project.ws.layout.configs / "crm.yaml").write_text(
        "salesforce:\n  composite_batch_size: 2\n  accounts: false\n  objects: [Contact]\n")
    seed(state)
    state.records["Contact"]["id4"] = state.records["Lead"].pop("id4")
    push(project, server, scores(), create_properties=True)
    state.upserted.clear()
    calls = {"n": 0}

    def fail_second(request, index):
        if "/composite/sobjects/" in request.path:
            calls["n"] += 1
            if calls["n"] == 2:
                return reply(400, [{"message": "boom", "errorCode": "MALFORMED_QUERY"}])
        return None

    server.inject = fail_second
    with pytest.raises(PushError, match=r"batch 2/3 failed.*HTTP 400"):
        push(project, server, scores(bump=0.5))
    server.inject = None
    report = push(project, server, scores(bump=0.5))
    assert report.reports[0].sent == 3
    sent = [k for _, k in state.upserted]
    assert sorted(sent) == [f"c{i}" for i in range(5)] and len(sent) == len(set(sent))

    state.api_used = state.api_max - 10  # fewer left than the reserve (1,000)
    with pytest.raises(PushError, match=r"daily API requests left, at or below the reserve"):
        push(project, server, scores(bump=0.9))


def test_the_access_token_appears_in_no_output(tmp_path, salesforce, monkeypatch, capsys, caplog):
    server, state = salesforce
    seed(state)
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", server.url)
    monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", TOKEN)
    ws = ["--workspace", str(tmp_path / "ws")]
    assert main([*ws, "ingest", "contacts", str(contacts_csv(tmp_path))]) == 0
    path = tmp_path / "scores.parquet"
    scores().to_parquet(path)
    caplog.set_level(logging.DEBUG)
    assert main([*ws, "push", "--to", "salesforce", "--from", str(path), "--create-properties"]) == 0
    state.token = "rotated"  # the fake now answers 401 and echoes the Authorization header it got
    scores(bump=0.4).to_parquet(path)
    assert main([*ws, "push", "--to", "salesforce", "--from", str(path)]) == 1
    captured = capsys.readouterr()
    assert "HTTP 401" in captured.err and "INVALID_SESSION_ID" in captured.err
    assert TOKEN not in captured.out + captured.err + caplog.text


def test_a_429_with_retry_after_from_salesforce_is_waited_for_and_retried(project, salesforce):
    server, state = salesforce
    seed(state)
    push(project, server, scores(), create_properties=True)
    slept, first = [], {"done": False}

    def throttle(request, index):
        if "/composite/sobjects/" in request.path and not first["done"]:
            first["done"] = True
            return reply(429, [{"message": "too many requests", "errorCode": "TOO_MANY_REQUESTS"}],
                         {"Retry-After": "3"})
        return None

    server.inject = throttle
    report = push(project, server, scores(bump=0.2), sleep=slept.append)
    assert slept == [3.0] and report.retries == 1 and [r.sent for r in report.reports] == [4, 1, 2]
    state.api_used = 0
    server.inject = lambda request, index: reply(403, [{"message": "TotalRequests Limit exceeded.",
                                                        "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    with pytest.raises(PushError, match="REQUEST_LIMIT_EXCEEDED"):
        push(project, server, scores(bump=0.4), sleep=slept.append)
    assert slept == [3.0]  # the daily limit is not retried
