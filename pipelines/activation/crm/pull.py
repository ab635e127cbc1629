"""``ingest outcomes|contacts --from hubspot|salesforce``: CRM records -> the rows file ingest reads.

The pulled rows go through :meth:`Workspace.ingest_relation`, the path every file takes, so their
validation, rejects (with reasons, in ``rejects`` and ``rejects/<kind>-<source>.csv``), counts and
deduplication are file ingest's. Idempotent: an outcome's id is the CRM's (``hubspot:deal:<deal>:
<contact>``), so re-pulling a deal adds nothing; contacts are upserted by contact_id. Incremental:
per CRM and kind, the newest modification time pulled is kept in ``<ws>/crm/pull-state.json`` and the
next pull asks for records modified at or after it (the boundary record again, harmlessly), written
only after the rows are loaded.

Our contact_id of a CRM person is its ``<prefix>contact_id`` property / ``Propensity_Contact_Id__c``
field when set, else the workspace contact with the same email, else empty: such a row is rejected
("contact_id is empty"), its CRM id and email kept in the reject, never dropped or guessed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

__all__ = ["PullReport", "pull"]


@dataclass(frozen=True)
class PullReport:
    crm: str
    kind: str
    since: str | None  # the modification time this pull started from (None: everything)
    fetched: int  # CRM records read (deals / opportunities, or people)
    ingest: object  # the IngestReport of the rows
    newest: str | None  # what the next pull starts from


def read_state(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(path)  # atomic: a crash leaves the old state, and the next pull repeats (idempotently)


def email_index(contacts: pd.DataFrame, column: str) -> dict[str, str]:
    """``lower(email) -> contact_id`` of the workspace's contacts (an email on two contacts maps to none)."""
    if column not in contacts.columns or contacts.empty:
        return {}
    table = contacts[["contact_id", column]].dropna()
    table = table.assign(key=table[column].astype(str).str.strip().str.lower())
    counts = table["key"].value_counts()
    unique = table[table["key"].map(counts) == 1]
    return dict(zip(unique["key"], unique["contact_id"].astype(str), strict=True))


def account_index(contacts: pd.DataFrame) -> dict[str, list[str]]:
    """``account_id -> [contact_id, ...]`` of the workspace's contacts."""
    if "account_id" not in contacts.columns or contacts.empty:
        return {}
    table = contacts[["contact_id", "account_id"]].dropna()
    return {str(a): sorted(map(str, group["contact_id"])) for a, group in table.groupby("account_id")}


def resolve(own_id: object, email: object, emails: Mapping[str, str]) -> str | None:
    if own_id is not None and str(own_id).strip():
        return str(own_id).strip()
    if email is not None and str(email).strip():
        return emails.get(str(email).strip().lower())
    return None


# -- HubSpot ------------------------------------------------------------------------------------


SEARCH_CAP = 10_000  # HubSpot's search pages through 10,000 results of one query at most (then HTTP 400)


def _hubspot_search(api, object_type: str, filters: list, properties: Sequence[str], *,
                    cap: int | None = None) -> Iterable:
    """Every result, oldest modification first. Past ``cap`` results the query starts again from the
    newest modification time seen (``GTE``, the ids already given skipped), so no result is lost."""
    import importlib

    models = importlib.import_module(f"hubspot.crm.{object_type}.models")
    search = getattr(api.client.crm, object_type).search_api
    cap = cap or SEARCH_CAP
    after, window, seen, newest, fresh_in_window = None, list(filters), set(), None, 0
    while True:
        request = models.PublicObjectSearchRequest(
            filter_groups=[models.FilterGroup(filters=[models.Filter(**f) for f in window])] if window else [],
            sorts=[{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
            properties=list({*properties, "hs_lastmodifieddate"}), limit=100, after=after)
        page = api.call(f"{object_type} search", search.do_search, public_object_search_request=request)
        fresh = [r for r in page.results if r.id not in seen]
        fresh_in_window += len(fresh)
        for result in fresh:
            seen.add(result.id)
            newest = result.properties.get("hs_lastmodifieddate") or newest
            yield result
        after = page.paging.next.after if page.paging and page.paging.next else None
        if after and int(after) + 100 > cap:  # the next page would pass the cap: a new window
            if not fresh_in_window or newest is None:
                raise ValueError(f"HubSpot {object_type} search: more than {cap:,} results modified at the same "
                                 "instant; pull them in smaller pieces (e.g. one pipeline at a time)")
            window = [f for f in filters if f["property_name"] != "hs_lastmodifieddate"] + [
                {"property_name": "hs_lastmodifieddate", "operator": "GTE", "value": _ms(newest)}]
            after, fresh_in_window = None, 0
        elif not after:
            return


def _ms(iso: str) -> str:
    return str(int(pd.Timestamp(iso).timestamp() * 1000))


def _hubspot_records(api, object_type: str, ids: Sequence[str], properties: Sequence[str]) -> dict[str, dict]:
    """``id -> properties`` of contacts or companies, 100 a batch read."""
    import importlib

    models = importlib.import_module(f"hubspot.crm.{object_type}.models")
    batch = getattr(api.client.crm, object_type).batch_api
    out = {}
    for start in range(0, len(ids), 100):
        chunk = ids[start:start + 100]
        answer = api.call(f"{object_type} batch read", batch.read, models.BatchReadInputSimplePublicObjectId(
            inputs=[models.SimplePublicObjectId(id=i) for i in chunk], properties=list(properties),
            properties_with_history=[]))
        out.update({r.id: r.properties for r in answer.results})
    return out


def _hubspot_associated(api, from_type: str, ids: Sequence[str], to: str) -> dict[str, list[str]]:
    """``id -> [associated ids]`` (v4 associations batch read, 100 ids a request)."""
    from hubspot.crm.associations.v4 import (
        BatchInputPublicFetchAssociationsBatchRequest,
        PublicFetchAssociationsBatchRequest,
    )

    out: dict[str, list[str]] = {}
    pending = [(str(i), None) for i in ids]
    while pending:  # a record with many associations pages them: ask again with its `after`, as HubSpot says
        chunk, pending = pending[:100], pending[100:]
        answer = api.call(f"{from_type} -> {to} associations", api.client.crm.associations.v4.batch_api.get_page,
                          from_type, to, BatchInputPublicFetchAssociationsBatchRequest(
                              inputs=[PublicFetchAssociationsBatchRequest(id=i, after=a) for i, a in chunk]))
        for result in answer.results:
            source = str(result._from.id)
            out.setdefault(source, []).extend(str(t.to_object_id) for t in result.to)
            if result.paging is not None and result.paging.next is not None and result.paging.next.after:
                pending.append((source, result.paging.next.after))
    return out


def _hubspot_account_ids(api, config, contact_ids: Sequence[str]) -> dict[str, str]:
    """HubSpot contact id -> our account_id, from its first company that carries one."""
    companies = _hubspot_associated(api, "contacts", contact_ids, "companies")
    ours = _hubspot_records(api, "companies", sorted({c for cs in companies.values() for c in cs}),
                            [config.account_id_property])
    out = {}
    for contact, ids in companies.items():
        found = [ours.get(i, {}).get(config.account_id_property) for i in ids]
        if any(found):
            out[contact] = next(f for f in found if f)
    return out


def _hubspot_people(api, ids: Sequence[str], properties: Sequence[str]) -> dict[str, dict]:
    return _hubspot_records(api, "contacts", ids, properties)


def hubspot_outcome_rows(api, config, since: str | None, emails: Mapping[str, str],
                         account_contacts: Mapping[str, list[str]] | None = None) -> tuple[pd.DataFrame, int, str | None]:
    """Won deals modified since ``since`` -> one outcome row per (deal, associated contact)."""

    pull = config.pull
    filters = [{"property_name": "dealstage", "operator": "IN", "values": list(pull.won_stages)}]
    if pull.pipeline:
        filters.append({"property_name": "pipeline", "operator": "EQ", "value": pull.pipeline})
    if since:
        filters.append({"property_name": "hs_lastmodifieddate", "operator": "GTE", "value": _ms(since)})
    deals = list(_hubspot_search(api, "deals", filters, ["dealname", "amount", "closedate", "dealstage", "pipeline",
                                                         "hs_lastmodifieddate"]))
    linked = _hubspot_associated(api, "deals", [d.id for d in deals], "contacts")
    people = _hubspot_people(api, sorted({c for cs in linked.values() for c in cs}),
                             ["email", config.contact_id_property])
    members: dict[str, list[str]] = {}  # deal id -> workspace contacts of its account (account_deals: contacts)
    orphans = [d.id for d in deals if not linked.get(d.id)]
    if pull.account_deals == "contacts" and orphans:
        companies = _hubspot_associated(api, "deals", orphans, "companies")
        ours = _hubspot_records(api, "companies", sorted({c for cs in companies.values() for c in cs}),
                                [config.account_id_property])
        for deal_id, ids in companies.items():
            accounts = {ours.get(i, {}).get(config.account_id_property) for i in ids} - {None}
            members[deal_id] = sorted({c for a in accounts for c in (account_contacts or {}).get(a, [])})
    rows = []
    for deal in deals:
        p = deal.properties
        if members.get(deal.id):
            rows += [{"outcome_id": f"hubspot:deal:{deal.id}:account:{c}", "contact_id": c, "ts": p.get("closedate"),
                      "outcome": pull.outcome, "value": p.get("amount"), "hubspot_deal_id": deal.id,
                      "hubspot_contact_id": None, "email": None} for c in members[deal.id]]
            continue
        contacts = linked.get(deal.id) or [None]
        for person in contacts:
            props = people.get(person, {}) if person else {}
            rows.append({"outcome_id": f"hubspot:deal:{deal.id}" + (f":{person}" if person else ""),
                         "contact_id": resolve(props.get(config.contact_id_property), props.get("email"), emails),
                         "ts": p.get("closedate"), "outcome": pull.outcome, "value": p.get("amount"),
                         "hubspot_deal_id": deal.id, "hubspot_contact_id": person, "email": props.get("email")})
    newest = max((d.properties.get("hs_lastmodifieddate") for d in deals if d.properties.get("hs_lastmodifieddate")),
                 default=since)
    return pd.DataFrame(rows, columns=["outcome_id", "contact_id", "ts", "outcome", "value", "hubspot_deal_id",
                                       "hubspot_contact_id", "email"]), len(deals), newest


def hubspot_contact_rows(api, config, since: str | None, emails: Mapping[str, str],
                         account_contacts=None) -> tuple[pd.DataFrame, int, str | None]:
    """Contacts modified since ``since`` -> contact rows with the chosen properties as attributes.

    No CRM record id among them (an id is noise to a model; the feature build's attribute guard would
    leave it out anyway); a reject keeps the email to find the record. ``updated_at`` is the record's
    last modification: it dates the new values in the workspace's attribute history.
    """
    chosen = list(dict.fromkeys(config.pull.contact_properties))
    filters = [{"property_name": "hs_lastmodifieddate", "operator": "GTE", "value": _ms(since)}] if since else []
    people = list(_hubspot_search(api, "contacts", filters, ["email", config.contact_id_property,
                                                             "hs_lastmodifieddate", *chosen]))
    accounts = _hubspot_account_ids(api, config, [p.id for p in people]) if people else {}
    rows = [{"contact_id": resolve(p.properties.get(config.contact_id_property), p.properties.get("email"), emails),
             "account_id": accounts.get(p.id), "email": p.properties.get("email"),
             "updated_at": p.properties.get("hs_lastmodifieddate"),
             **{c: p.properties.get(c) for c in chosen}} for p in people]
    newest = max((p.properties.get("hs_lastmodifieddate") for p in people
                  if p.properties.get("hs_lastmodifieddate")), default=since)
    return (pd.DataFrame(rows, columns=["contact_id", "account_id", "email", "updated_at", *chosen]),
            len(people), newest)


# -- Salesforce ---------------------------------------------------------------------------------


def _soql_time(iso: str) -> str:
    return pd.Timestamp(iso).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ") if pd.Timestamp(iso).tzinfo else \
        pd.Timestamp(iso).strftime("%Y-%m-%dT%H:%M:%SZ")


def _quote(values: Iterable[str]) -> str:
    return ", ".join("'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)


def _query(api, soql: str) -> list[dict]:
    return list(api.call("query", api.sf.query_all, soql)["records"])


def salesforce_outcome_rows(api, config, since: str | None, emails: Mapping[str, str],
                            account_contacts: Mapping[str, list[str]] | None = None) -> tuple[pd.DataFrame, int, str | None]:
    """Won opportunities modified since ``since`` -> one outcome row per (opportunity, contact role)."""
    pull = config.pull
    where = [f"StageName IN ({_quote(pull.won_stages)})"]
    if since:
        where.append(f"LastModifiedDate >= {_soql_time(since)}")
    opportunities = _query(api, "SELECT Id, Name, StageName, CloseDate, Amount, AccountId, LastModifiedDate "
                                f"FROM Opportunity WHERE {' AND '.join(where)} ORDER BY LastModifiedDate, Id")
    roles: dict[str, list[str]] = {}
    ids = [o["Id"] for o in opportunities]
    for start in range(0, len(ids), 200):  # bounded IN lists (SOQL statements are limited in length)
        for role in _query(api, "SELECT Id, OpportunityId, ContactId FROM OpportunityContactRole "
                                f"WHERE OpportunityId IN ({_quote(ids[start:start + 200])})"):
            roles.setdefault(role["OpportunityId"], []).append(role["ContactId"])
    people_ids = sorted({c for cs in roles.values() for c in cs})
    people: dict[str, dict] = {}
    for start in range(0, len(people_ids), 200):
        for person in _query(api, f"SELECT Id, Email, {config.contact_id_field} FROM Contact "
                                  f"WHERE Id IN ({_quote(people_ids[start:start + 200])})"):
            people[person["Id"]] = person
    members: dict[str, list[str]] = {}  # opportunity -> workspace contacts of its Account (account_deals: contacts)
    orphans = sorted({o["AccountId"] for o in opportunities if not roles.get(o["Id"]) and o.get("AccountId")})
    if pull.account_deals == "contacts" and orphans:
        ours = _salesforce_account_ids(api, config, orphans)
        for opp in opportunities:
            if not roles.get(opp["Id"]) and ours.get(opp.get("AccountId")):
                members[opp["Id"]] = sorted((account_contacts or {}).get(ours[opp["AccountId"]], []))
    rows = []
    for opp in opportunities:
        if members.get(opp["Id"]):
            rows += [{"outcome_id": f"salesforce:opportunity:{opp['Id']}:account:{c}", "contact_id": c,
                      "ts": opp.get("CloseDate"), "outcome": pull.outcome, "value": opp.get("Amount"),
                      "salesforce_opportunity_id": opp["Id"], "salesforce_account_id": opp.get("AccountId"),
                      "salesforce_contact_id": None, "email": None} for c in members[opp["Id"]]]
            continue
        for person in roles.get(opp["Id"]) or [None]:
            p = people.get(person, {}) if person else {}
            rows.append({"outcome_id": f"salesforce:opportunity:{opp['Id']}" + (f":{person}" if person else ""),
                         "contact_id": resolve(p.get(config.contact_id_field), p.get("Email"), emails),
                         "ts": opp.get("CloseDate"), "outcome": pull.outcome, "value": opp.get("Amount"),
                         "salesforce_opportunity_id": opp["Id"], "salesforce_account_id": opp.get("AccountId"),
                         "salesforce_contact_id": person, "email": p.get("Email")})
    newest = max((o["LastModifiedDate"] for o in opportunities if o.get("LastModifiedDate")), default=since)
    columns = ["outcome_id", "contact_id", "ts", "outcome", "value", "salesforce_opportunity_id",
               "salesforce_account_id", "salesforce_contact_id", "email"]
    return pd.DataFrame(rows, columns=columns), len(opportunities), newest


def salesforce_contact_rows(api, config, since: str | None, emails: Mapping[str, str],
                            account_contacts=None) -> tuple[pd.DataFrame, int, str | None]:
    """Contacts and Leads modified since ``since`` -> contact rows (``salesforce_object`` says which;
    ``updated_at``, the record's ``LastModifiedDate``, dates the values in the attribute history)."""
    chosen = list(dict.fromkeys(config.pull.contact_fields))
    rows, fetched, newest = [], 0, since
    for sobject in config.objects:
        account = ["AccountId"] if sobject == "Contact" else []  # a Lead has no Account until converted
        fields = ", ".join(dict.fromkeys(["Id", "Email", config.contact_id_field, "LastModifiedDate", *account,
                                          *chosen]))
        where = f" WHERE LastModifiedDate >= {_soql_time(since)}" if since else ""
        people = _query(api, f"SELECT {fields} FROM {sobject}{where} ORDER BY LastModifiedDate, Id")
        fetched += len(people)
        ours = _salesforce_account_ids(api, config, sorted({p["AccountId"] for p in people if p.get("AccountId")}))
        rows += [{"contact_id": resolve(p.get(config.contact_id_field), p.get("Email"), emails),
                  "account_id": ours.get(p.get("AccountId")), "email": p.get("Email"),
                  "updated_at": p.get("LastModifiedDate"),
                  config.object_column: sobject, **{c: p.get(c) for c in chosen}} for p in people]
        newest = max([newest, *(p["LastModifiedDate"] for p in people if p.get("LastModifiedDate"))],
                     key=lambda t: pd.Timestamp(t) if t else pd.Timestamp.min.tz_localize("UTC"))
    return pd.DataFrame(rows, columns=["contact_id", "account_id", "email", "updated_at", config.object_column,
                                       *chosen]), fetched, newest


def _salesforce_account_ids(api, config, account_ids: Sequence[str]) -> dict[str, str]:
    """Salesforce Account Id -> our account_id (``Propensity_Account_Id__c``), for those that carry one."""
    out = {}
    for start in range(0, len(account_ids), 200):
        for account in _query(api, f"SELECT Id, {config.account_id_field} FROM Account "
                                   f"WHERE Id IN ({_quote(account_ids[start:start + 200])})"):
            if account.get(config.account_id_field):
                out[account["Id"]] = account[config.account_id_field]
    return out


# -- the pull -----------------------------------------------------------------------------------

FETCHERS = {("hubspot", "outcomes"): hubspot_outcome_rows, ("hubspot", "contacts"): hubspot_contact_rows,
            ("salesforce", "outcomes"): salesforce_outcome_rows, ("salesforce", "contacts"): salesforce_contact_rows}


def pull(ws, crm: str, kind: str, api, config, *, full: bool = False) -> PullReport:
    """Fetch ``kind`` from ``crm`` since the last pull (``full``: everything) and ingest it as a file would be."""
    if (crm, kind) not in FETCHERS:
        raise ValueError(f"ingest {kind} --from {crm}: expected outcomes or contacts from hubspot or salesforce")
    state_path = ws.layout.crm_pull_state
    state = read_state(state_path)
    key = f"{crm}:{kind}"
    since = None if full else state.get(key)
    email_column = config.email_column if crm == "hubspot" else "email"
    known = ws.table("contacts") if ws.db_path.exists() else pd.DataFrame(columns=["contact_id"])
    frame, fetched, newest = FETCHERS[(crm, kind)](api, config, since, email_index(known, email_column),
                                                   account_index(known))
    source = f"{crm}-{'deals' if crm == 'hubspot' else 'opportunities'}" if kind == "outcomes" else f"{crm}-contacts"
    if kind == "outcomes":
        # the CRM ids ride along for the reject file (a row without a contact is found again by them); the
        # outcomes table keeps its canonical columns
        report = ws.ingest_relation(kind, frame, source)
    else:
        report = ws.ingest_relation(kind, frame, source, infer_types=True)
    if newest is not None:
        state[key] = str(newest)
        write_state(state_path, state)
    return PullReport(crm, kind, since, fetched, report, newest)
