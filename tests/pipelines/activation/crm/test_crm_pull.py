"""`ingest outcomes|contacts --from hubspot|salesforce`: real clients, local CRMs, file ingest's counts."""

from __future__ import annotations

from contextlib import closing
from datetime import datetime

import pandas as pd
import pytest

from propensity.pipelines.activation.crm.limits import crm_unavailable

if (missing := crm_unavailable()) is not None:
    pytest.skip(missing, allow_module_level=True)

from crm_fakes import hubspot_server, salesforce_server, self_signed_certificate

from propensity.features.store import ingest_file
from propensity.pipelines.cli import main
from propensity.pipelines.project import Project

TOKEN = "pat-na1-99999999-8888-7777-6666-pullpullpull"
SF_TOKEN = "00D5g000004XyZ!AQ0AQPullToken.s3cr3t"


@pytest.fixture
def hubspot():
    server, state = hubspot_server(TOKEN)
    server.start()
    yield server, state
    server.stop()


def workspace(tmp_path, name="ws"):
    proj = Project(tmp_path / name)
    path = tmp_path / f"{name}-contacts.csv"
    pd.DataFrame({"contact_id": ["c0", "c1", "c2"], "email": ["c0@example.com", "C1@Example.com", "c2@example.com"],
                  }).to_csv(path, index=False)
    proj.ingest("contacts", path)
    return proj


def seed_hubspot(state):
    people = {"201": {"email": "x0@example.com", "propensity_contact_id": "c0"},  # our id set on the record
              "202": {"email": "c1@example.com"},  # matched by email (case aside)
              "203": {"email": "stranger@example.com"}}  # nobody we know: rejected, not guessed
    state.properties["contacts"]["propensity_contact_id"] = {"name": "propensity_contact_id", "hasUniqueValue": True}
    for i, (pid, props) in enumerate(people.items()):
        state.objects["contacts"][pid] = {"id": pid, "properties": {
            **props, "lifecyclestage": "customer", "industry": "EdTech" if i else "SaaS",
            "hs_lastmodifieddate": f"2026-11-0{i + 1}T10:00:00Z"}}
    deals = {"301": ("closedwon", "1200", ["201"]), "302": ("closedwon", "300.5", ["202", "203", "201"]),
             "303": ("closedlost", "999", ["201"]), "304": ("closedwon", "50", [])}
    for i, (did, (stage, amount, contacts)) in enumerate(deals.items()):
        state.objects["deals"][did] = {"id": did, "properties": {
            "dealname": f"deal {did}", "dealstage": stage, "amount": amount, "pipeline": "default",
            "closedate": f"2026-10-1{i}T00:00:00Z", "hs_lastmodifieddate": f"2026-11-1{i}T09:00:00Z"}}
        state.associations[did] = contacts


def test_won_deals_become_outcomes_with_file_ingests_rejects_and_counts_and_a_repull_adds_nothing(tmp_path, hubspot):
    server, state = hubspot
    seed_hubspot(state)
    proj = workspace(tmp_path)
    env = {"HUBSPOT_ACCESS_TOKEN": TOKEN, "HUBSPOT_API_URL": server.url}
    first = proj.pull_crm("hubspot", "outcomes", environ=env)
    assert first.fetched == 3 and len(server.calls("POST", r"/crm/v3/objects/deals/search")) == 2  # 2 pages
    r = first.ingest
    # 301:c0, 302:c1, 302:c0 (302's third contact, on the second page of its associations) in;
    # 302:stranger and 304 (no contact) out
    assert (r.read, r.loaded, r.rejected) == (5, 3, 2)
    outcomes = proj.ws.table("outcomes").sort_values("outcome_id")
    assert list(outcomes["outcome_id"]) == ["hubspot:deal:301:201", "hubspot:deal:302:201", "hubspot:deal:302:202"]
    assert list(outcomes["contact_id"]) == ["c0", "c0", "c1"] and list(outcomes["value"]) == [1200.0, 300.5, 300.5]
    assert str(outcomes["ts"].iloc[0]) == "2026-10-10 00:00:00" and set(outcomes["outcome"]) == {"closed_won"}
    rejects = proj.ws.table("rejects")
    assert set(rejects["source"]) == {"hubspot-deals"} and set(rejects["field"]) == {"contact_id"}
    assert any("stranger@example.com" in raw for raw in rejects["raw"])

    # the same rows as a file, ingested into another workspace: the same counts and the same table
    from propensity.pipelines.activation.crm.hubspot import hubspot_from_env
    from propensity.pipelines.activation.crm.pull import (
        email_index,
        hubspot_outcome_rows,
    )

    config, _ = proj.crm_config()
    frame, _, _ = hubspot_outcome_rows(hubspot_from_env(config.hubspot, environ=env), config.hubspot, None,
                                       email_index(proj.ws.table("contacts"), "email"))
    other = workspace(tmp_path, "ws-file")
    frame.to_parquet(tmp_path / "hubspot-deals.parquet")
    from_file = ingest_file(other.ws, "outcomes", tmp_path / "hubspot-deals.parquet")
    assert (from_file.read, from_file.loaded, from_file.rejected, from_file.duplicates) == (5, 3, 2, 0)
    pd.testing.assert_frame_equal(other.ws.table("outcomes").sort_values("outcome_id").reset_index(drop=True),
                                  outcomes.reset_index(drop=True))

    again = proj.pull_crm("hubspot", "outcomes", environ=env)  # incremental: only the newest (304) again
    assert again.since == "2026-11-13T09:00:00Z" and again.fetched == 1 and again.ingest.loaded == 0
    state.objects["deals"]["303"]["properties"].update(dealstage="closedwon", hs_lastmodifieddate="2026-11-20T09:00:00Z")
    third = proj.pull_crm("hubspot", "outcomes", environ=env)
    assert third.fetched == 2 and third.ingest.loaded == 1  # 303 is won now (304 is the boundary, again)
    full = proj.pull_crm("hubspot", "outcomes", environ=env, full=True)
    assert full.ingest.loaded == 0 and full.ingest.duplicates == 4 and len(proj.ws.table("outcomes")) == 4


def test_contacts_pull_brings_the_chosen_properties_as_attributes(tmp_path, hubspot, monkeypatch, capsys):
    server, state = hubspot
    seed_hubspot(state)
    state.objects["companies"]["501"] = {"id": "501", "properties": {"name": "Acme", "propensity_account_id": "acme"}}
    state.objects["companies"]["502"] = {"id": "502", "properties": {"name": "Not pushed yet"}}
    state.contact_companies = {"201": ["502", "501"], "202": ["502"]}  # c0: acme; c1: a company without our id
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("HUBSPOT_API_URL", server.url)
    proj = workspace(tmp_path)
    ws = ["--workspace", str(proj.path)]
    assert main([*ws, "ingest", "contacts", "--from", "hubspot"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "3 people modified (everything: first pull)" in out and "read 3, loaded 0, updated 2" in out
    assert "rejected 1" in out
    contacts = proj.ws.table("contacts").set_index("contact_id")
    assert contacts.loc["c0", "industry"] == "SaaS" and contacts.loc["c1", "industry"] == "EdTech"
    assert "lifecyclestage" not in contacts.columns  # not among the shipped fit attributes (a conversion sets it)
    assert "hubspot_id" not in contacts.columns  # a CRM id would become a model feature
    assert contacts.loc["c0", "account_id"] == "acme" and pd.isna(contacts.loc["c1", "account_id"])
    assert contacts.loc["c0", "updated_at"] == pd.Timestamp("2026-11-01T10:00:00")  # dates the history
    assert main([*ws, "ingest", "contacts", "--from", "hubspot"]) == 0
    assert "1 people modified since 2026-11-03T10:00:00Z" in " ".join(capsys.readouterr().out.split())
    assert main([*ws, "ingest", "outcomes"]) != 0  # neither a file nor --from


def test_salesforce_won_opportunities_and_people_are_pulled_incrementally(tmp_path, tmp_path_factory, monkeypatch):
    cert = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert[0])
    server, state = salesforce_server(SF_TOKEN, cert)
    server.start()
    try:
        ext = "Propensity_Contact_Id__c"
        state.page_size = 1  # every query result in pages behind nextRecordsUrl
        state.fields["Contact"].add(ext)
        state.fields["Lead"].add(ext)
        state.fields["Account"].add("Propensity_Account_Id__c")
        state.records["Account"]["0011"] = {"Id": "0011", "Name": "Acme", "Propensity_Account_Id__c": "acme"}
        state.records["Contact"] = {
            "0031": {"Id": "0031", "Email": "x@example.com", ext: "c0", "LeadSource": "Web", "Title": "CTO",
                     "AccountId": "0011",
                     "LastModifiedDate": "2026-11-01T10:00:00.000+0000"},
            "0032": {"Id": "0032", "Email": "c2@example.com", ext: None, "LeadSource": "Event", "Title": "VP",
                     "LastModifiedDate": "2026-11-02T10:00:00.000+0000"}}
        state.records["Lead"] = {"00Q1": {"Id": "00Q1", "Email": "c1@example.com", ext: None, "LeadSource": "Ads",
                                          "Title": "Analyst", "LastModifiedDate": "2026-11-03T10:00:00.000+0000"}}
        for i, (oid, stage, roles) in enumerate([("0061", "Closed Won", ["0031"]), ("0062", "Closed Won", ["0032"]),
                                                 ("0063", "Prospecting", ["0031"])]):
            state.records["Opportunity"][oid] = {"Id": oid, "Name": oid, "StageName": stage, "Amount": 1000.0 * (i + 1),
                                                 "CloseDate": f"2026-10-0{i + 1}", "AccountId": "0011",
                                                 "LastModifiedDate": f"2026-11-1{i}T08:00:00.000+0000"}
            for contact in roles:
                state.records["OpportunityContactRole"][f"00K{oid}{contact}"] = {
                    "Id": f"00K{oid}{contact}", "OpportunityId": oid, "ContactId": contact}
        proj = workspace(tmp_path)
        env = {"SALESFORCE_INSTANCE_URL": server.url, "SALESFORCE_ACCESS_TOKEN": SF_TOKEN}
        first = proj.pull_crm("salesforce", "outcomes", environ=env)
        assert first.fetched == 2 and (first.ingest.read, first.ingest.loaded, first.ingest.rejected) == (2, 2, 0)
        outcomes = proj.ws.table("outcomes").sort_values("outcome_id")
        assert list(outcomes["contact_id"]) == ["c0", "c2"] and list(outcomes["value"]) == [1000.0, 2000.0]
        again = proj.pull_crm("salesforce", "outcomes", environ=env)
        assert again.fetched == 1 and again.ingest.loaded == 0  # the boundary opportunity, not added twice

        people = proj.pull_crm("salesforce", "contacts", environ=env)
        assert people.fetched == 3 and people.ingest.updated == 3
        contacts = proj.ws.table("contacts").set_index("contact_id")
        assert contacts.loc["c1", "salesforce_object"] == "Lead" and contacts.loc["c2", "Title"] == "VP"
        assert contacts.loc["c0", "account_id"] == "acme" and pd.isna(contacts.loc["c1", "account_id"])
        # the record's LastModifiedDate dates its version in the attribute history (UTC)
        assert contacts.loc["c1", "updated_at"] == pd.Timestamp("2026-11-03T10:00:00")
        with closing(proj.ws.connect()) as con:
            dated = dict(con.execute("SELECT contact_id, valid_from FROM contact_history "
                                     "WHERE valid_from IS NOT NULL").fetchall())
        assert dated["c1"] == datetime(2026, 11, 3, 10)
        assert len(server.calls("GET", r".*/query/\d+-.*")) >= 1  # nextRecordsUrl pages were followed
    finally:
        server.stop()


def test_a_search_past_hubspots_result_cap_goes_on_from_the_newest_modification_seen(tmp_path, hubspot, monkeypatch):
    import propensity.pipelines.activation.crm.pull as pull_module

    server, state = hubspot
    seed_hubspot(state)
    for i in range(6):  # more won deals, each with its own modification time
        state.objects["deals"][f"40{i}"] = {"id": f"40{i}", "properties": {
            "dealname": "more", "dealstage": "closedwon", "amount": "10", "pipeline": "default",
            "closedate": "2026-10-20T00:00:00Z", "hs_lastmodifieddate": f"2026-11-2{i}T09:00:00Z"}}
        state.associations[f"40{i}"] = ["201"]
    state.search_cap = 4  # the fake refuses to page past 4 results of one query, as HubSpot past 10,000
    monkeypatch.setattr(pull_module, "SEARCH_CAP", 4)
    proj = workspace(tmp_path)
    report = proj.pull_crm("hubspot", "outcomes", environ={"HUBSPOT_ACCESS_TOKEN": TOKEN, "HUBSPOT_API_URL": server.url})
    assert report.fetched == 9 and report.ingest.loaded == 9  # 3 + 6 won deals; 304 and a stranger rejected


def test_account_deals_are_rejected_by_default_or_given_to_every_contact_of_the_account(tmp_path, hubspot):
    server, state = hubspot
    seed_hubspot(state)  # deal 304 is won, with no contact
    state.objects["companies"]["501"] = {"id": "501", "properties": {"name": "Acme", "propensity_account_id": "acme"}}
    state.company_associations["304"] = ["501"]
    proj = Project(tmp_path / "ws")
    path = tmp_path / "contacts.csv"
    pd.DataFrame({"contact_id": ["c0", "c1", "c2"], "email": ["c0@example.com", "c1@example.com", None],
                  "account_id": ["acme", "other", "acme"]}).to_csv(path, index=False)
    proj.ingest("contacts", path)
    env = {"HUBSPOT_ACCESS_TOKEN": TOKEN, "HUBSPOT_API_URL": server.url}
    default = proj.pull_crm("hubspot", "outcomes", environ=env)
    assert default.ingest.rejected == 2 and not server.calls("POST", r"/crm/v4/associations/deals/companies/.*")
    proj.ws.layout.configs.mkdir(parents=True, exist_ok=True)
    (proj.ws.layout.configs / "crm.yaml").write_text("hubspot:\n  pull:\n    account_deals: contacts\n")
    spread = proj.pull_crm("hubspot", "outcomes", environ=env, full=True)
    assert spread.ingest.loaded == 2  # deal 304 -> acme's c0 and c2 (the rest were loaded by the first pull)
    ids = set(proj.ws.table("outcomes")["outcome_id"])
    assert {"hubspot:deal:304:account:c0", "hubspot:deal:304:account:c2"} <= ids


def test_a_salesforce_account_opportunity_goes_to_the_accounts_contacts_when_asked(tmp_path, tmp_path_factory,
                                                                                    monkeypatch):
    cert = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert[0])
    server, state = salesforce_server(SF_TOKEN, cert)
    server.start()
    try:
        state.fields["Account"].add("Propensity_Account_Id__c")
        state.records["Account"]["0011"] = {"Id": "0011", "Name": "Acme", "Propensity_Account_Id__c": "acme"}
        state.records["Opportunity"]["0064"] = {"Id": "0064", "Name": "renewal", "StageName": "Closed Won",
                                                "Amount": 500.0, "CloseDate": "2026-10-05", "AccountId": "0011",
                                                "LastModifiedDate": "2026-11-05T08:00:00.000+0000"}
        proj = Project(tmp_path / "ws")
        path = tmp_path / "contacts.csv"
        pd.DataFrame({"contact_id": ["c0", "c1"], "account_id": ["acme", "acme"]}).to_csv(path, index=False)
        proj.ingest("contacts", path)
        proj.ws.layout.configs.mkdir(parents=True, exist_ok=True)
        (proj.ws.layout.configs / "crm.yaml").write_text("salesforce:\n  pull:\n    account_deals: contacts\n")
        env = {"SALESFORCE_INSTANCE_URL": server.url, "SALESFORCE_ACCESS_TOKEN": SF_TOKEN}
        report = proj.pull_crm("salesforce", "outcomes", environ=env)
        assert report.ingest.loaded == 2 and set(proj.ws.table("outcomes")["contact_id"]) == {"c0", "c1"}
    finally:
        server.stop()


def test_a_pull_that_fails_midway_loads_nothing_and_the_next_one_starts_from_the_same_point(tmp_path, hubspot):
    from crm_fakes import reply

    from propensity.pipelines.activation.retrying import DeliveryFailure

    server, state = hubspot
    seed_hubspot(state)
    proj = workspace(tmp_path)
    env = {"HUBSPOT_ACCESS_TOKEN": TOKEN, "HUBSPOT_API_URL": server.url}

    def second_page_down(request, index):
        body = request.json() if request.path.endswith("/search") else None
        if body and body.get("after"):
            return reply(502, {"message": "bad gateway"})
        return None

    server.inject = second_page_down
    slept = []
    with pytest.raises(DeliveryFailure, match="HTTP 502"):
        proj.pull_crm("hubspot", "outcomes", environ=env, sleep=slept.append)
    assert len(slept) == 4  # retried with backoff (5 attempts) before giving up
    assert len(proj.ws.table("outcomes")) == 0 and not proj.ws.layout.crm_pull_state.exists()
    server.inject = None
    report = proj.pull_crm("hubspot", "outcomes", environ=env)
    assert report.since is None and report.ingest.loaded == 3
