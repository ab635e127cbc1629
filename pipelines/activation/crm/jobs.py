"""Wiring of ``push --to hubspot|salesforce``: scored contacts + the workspace's contacts -> CRM records
-> :func:`..push.push` per object (so the changed-only rule, the holdout, ``--dry-run``, the push
state and resuming are the ones every push has).

Push state: ``activation_push_state`` of the service database, one destination per CRM object
(``hubspot:contacts``, ``hubspot:companies``, ``salesforce:Contact`` ...), keyed by our contact_id
or account_id, with the fingerprint of the fields as sent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from propensity.pipelines.activation.crm.records import (
    account_records,
    account_scores,
    crm_records,
    match_keys,
)
from propensity.pipelines.activation.holdout import HoldoutConfig, assign
from propensity.pipelines.activation.push import (
    ContactTraits,
    Destination,
    PushOptions,
    PushReport,
    pending_contacts,
    push,
)

__all__ = ["CRMPushReport", "ObjectPush", "held_out_contacts", "push_objects", "sibling_preview"]


@dataclass(frozen=True)
class ObjectPush:
    """One CRM object's part of a push: where it goes and what it is sent."""

    destination: Destination
    records: list[ContactTraits]
    holdout: bool  # contacts: the holdout applies; accounts: already rolled up without held-out contacts


@dataclass(frozen=True)
class CRMPushReport:
    crm: str
    reports: list[PushReport]
    skipped: dict[str, str]  # scored contacts not sent, and why (e.g. no email to match on)
    properties: list = field(default_factory=list)  # what --create-properties found / created
    requests: int = 0
    retries: int = 0


def held_out_contacts(engine: sa.Engine, holdout: HoldoutConfig | None, contact_ids: Sequence[str], *,
                      record: bool) -> set[str]:
    """The contacts the holdout keeps out (their scores must not reach an account roll-up either)."""
    if holdout is None or not holdout.push or not contact_ids:
        return set()
    with engine.connect() as conn:
        groups = assign(conn, holdout, contact_ids, dt.datetime.now(dt.UTC).replace(tzinfo=None))
        if record:
            conn.commit()
    return {c for c, out in groups.items() if out}


def sibling_preview(path: Path | None, part: str) -> Path | None:
    """``scores.jsonl`` -> ``scores.companies.jsonl``: one preview file per object pushed."""
    return None if path is None else path.with_name(f"{path.stem}.{part}{path.suffix}")


def push_objects(engine: sa.Engine, parts: Sequence[ObjectPush], *, options: PushOptions, dry_run: bool,
                 preview_out: Path | None, holdout: HoldoutConfig | None) -> list[PushReport]:
    """Push each part in order (contacts before accounts); a failure stops the run (PushError)."""
    reports = []
    for number, part in enumerate(parts):
        where = preview_out if number == 0 else sibling_preview(preview_out, part.destination.name.split(":")[-1])
        reports.append(push(engine, part.destination, part.records, options=options, dry_run=dry_run,
                            preview_out=where if dry_run else None, holdout=holdout if part.holdout else None))
    return reports


def contact_and_account_records(scored: Sequence[ContactTraits], contacts_table: pd.DataFrame, *,
                                match_column: str | None, account_keys: bool, held_out: set[str], name, value,
                                source: str):
    """(contact records, keys they match on, skipped, account records): the pure part of a CRM push."""
    ids = [c.contact_id for c in scored]
    keys = (match_keys(contacts_table, match_column, ids, source) if match_column is not None
            else {c: c for c in ids})
    skipped = {c: f"no {match_column} in the contacts table to match on" for c in ids if c not in keys}
    matched = [c for c in scored if c.contact_id in keys]
    records = crm_records(matched, name, value)
    accounts: list[ContactTraits] = []
    if account_keys:
        if "account_id" not in contacts_table.columns:
            raise ValueError(f"{source}: account roll-ups need an account_id column in the contacts table "
                             "(or turn them off in crm.yaml)")
        table = contacts_table.drop_duplicates("contact_id", keep="last")
        owner = {str(k): str(v) for k, v in zip(table["contact_id"], table["account_id"], strict=True)
                 if v is not None and not pd.isna(v) and str(v).strip()}
        accounts = account_records(account_scores([c for c in scored if c.contact_id not in held_out], owner),
                                   name, value)
    return records, keys, skipped, accounts


def push_hubspot(engine: sa.Engine, api, config, project: str, scored: Sequence[ContactTraits],
                 contacts_table: pd.DataFrame, *, dry_run: bool = False, preview_out: Path | None = None,
                 holdout: HoldoutConfig | None = None, create_properties: bool = False,
                 source: str = "scores") -> CRMPushReport:
    """Contacts (matched by email or our contact_id), then company roll-ups, changed ones only.

    ``api`` is a :class:`.hubspot.HubSpotAPI`; ``config`` the ``hubspot`` section of crm.yaml.
    With ``create_properties`` the missing properties are created first (listed only, with ``dry_run``).
    """
    from propensity.pipelines.activation.crm.hubspot import (
        HubSpotObjects,
        ensure_properties,
        hubspot_value,
    )

    properties = ensure_properties(api, config, project, dry_run=dry_run) if create_properties else []
    held_out = held_out_contacts(engine, holdout, [c.contact_id for c in scored], record=not dry_run)
    by_email = config.match == "email"
    records, keys, skipped, accounts = contact_and_account_records(
        scored, contacts_table, match_column=config.email_column if by_email else None,
        account_keys=config.companies, held_out=held_out, name=config.prop, value=hubspot_value, source=source)
    parts = [ObjectPush(HubSpotObjects(api, "contacts", "email" if by_email else config.contact_id_property, keys),
                        records, holdout=True)]
    if config.companies:
        parts.append(ObjectPush(HubSpotObjects(api, "companies", config.account_id_property,
                                               {a.contact_id: a.contact_id for a in accounts}), accounts, holdout=False))
    reports = push_objects(engine, parts, options=PushOptions(batch_size=config.batch_size), dry_run=dry_run,
                           preview_out=preview_out, holdout=holdout)
    return CRMPushReport("hubspot", reports, skipped, properties, api.requests, api.retries)


CRMS = ("hubspot", "salesforce")


def crm_api(crm: str, crm_config, *, environ=None, layout=None, sleep=None):
    """The CRM's API object with its credentials from the environment (HubSpotAPI or SalesforceAPI)."""
    import time

    from propensity.pipelines.activation.crm.limits import crm_unavailable

    if (reason := crm_unavailable()) is not None:
        raise ValueError(reason)
    sleep = sleep or time.sleep
    if crm == "hubspot":
        from propensity.pipelines.activation.crm.hubspot import hubspot_from_env

        log = layout.crm_request_log("hubspot") if layout is not None else None
        return hubspot_from_env(crm_config.hubspot, environ=environ, request_log=log, sleep=sleep)
    if crm == "salesforce":
        from propensity.pipelines.activation.crm.salesforce import salesforce_from_env

        return salesforce_from_env(crm_config.salesforce, environ=environ, sleep=sleep)
    raise ValueError(f"{crm!r}: expected one of {', '.join(CRMS)}")


def push_crm(to: str, engine: sa.Engine, crm_config, scored: Sequence[ContactTraits], contacts_table: pd.DataFrame,
             *, layout, dry_run: bool = False, preview_out: Path | None = None, holdout: HoldoutConfig | None = None,
             create_properties: bool = False, environ=None, source: str = "scores", sleep=None) -> CRMPushReport:
    """``push --to hubspot|salesforce``: credentials from the environment, request log in the workspace."""
    from propensity.pipelines.activation.tables import create_activation_tables

    create_activation_tables(engine)
    api = crm_api(to, crm_config, environ=environ, layout=layout, sleep=sleep)
    if to == "hubspot":
        return push_hubspot(engine, api, crm_config.hubspot, crm_config.project, scored, contacts_table,
                            dry_run=dry_run, preview_out=preview_out, holdout=holdout,
                            create_properties=create_properties, source=source)
    if to == "salesforce":
        return push_salesforce(engine, api, crm_config.salesforce, crm_config.project, scored, contacts_table,
                               dry_run=dry_run, preview_out=preview_out, holdout=holdout,
                               create_properties=create_properties, source=source)
    raise ValueError(f"push --to {to!r}: expected one of {', '.join(CRMS)}")


def push_salesforce(engine: sa.Engine, api, config, project: str, scored: Sequence[ContactTraits],
                    contacts_table: pd.DataFrame, *, dry_run: bool = False, preview_out: Path | None = None,
                    holdout: HoldoutConfig | None = None, create_properties: bool = False,
                    source: str = "scores") -> CRMPushReport:
    """Contacts / Leads (per the contacts table's object column), then Account roll-ups, changed ones only.

    Per object, more pending records than ``bulk_threshold`` go as Bulk API 2.0 jobs (10,000 a
    job), fewer as sObject Collections requests (200 a request).
    """
    from propensity.pipelines.activation.crm.salesforce import (
        SalesforceObjects,
        ensure_fields,
        sf_name,
        sf_value,
    )

    properties = ensure_fields(api, config, project, dry_run=dry_run) if create_properties else []
    held_out = held_out_contacts(engine, holdout, [c.contact_id for c in scored], record=not dry_run)
    name = sf_name(config)
    records, _, skipped, accounts = contact_and_account_records(
        scored, contacts_table, match_column=None, account_keys=config.accounts, held_out=held_out, name=name,
        value=sf_value, source=source)
    owner = {}
    if config.object_column in contacts_table.columns:
        table = contacts_table.drop_duplicates("contact_id", keep="last")
        owner = {str(k): str(v) for k, v in zip(table["contact_id"], table[config.object_column], strict=True)
                 if str(v) in config.objects}
    reports = []
    groups = [(sobject, [r for r in records if owner.get(r.contact_id, config.objects[0]) == sobject], True,
               name("contact_id")) for sobject in config.objects]
    if config.accounts:
        groups.append(("Account", accounts, False, name("account_id")))
    for number, (sobject, part, applies, external_id) in enumerate(groups):
        if not part:
            continue
        pending = len(pending_contacts(engine, f"salesforce:{sobject}", part))
        bulk = pending > config.bulk_threshold
        where = preview_out if number == 0 else sibling_preview(preview_out, sobject)
        size = 10_000 if bulk else config.composite_batch_size
        reports.append(push(engine, SalesforceObjects(api, sobject, external_id, bulk=bulk), part,
                            options=PushOptions(batch_size=size), dry_run=dry_run,
                            preview_out=where if dry_run else None, holdout=holdout if applies else None))
    return CRMPushReport("salesforce", reports, skipped, properties, api.requests, api.retries)
