"""Salesforce through ``simple-salesforce``: scores as fields on Contacts / Leads and Accounts.

Records are upserted on an External ID field holding our id (``Propensity_Contact_Id__c``,
``Propensity_Account_Id__c``). Small pushes go through REST sObject Collections
(``PATCH /composite/sobjects/{object}/{external id field}``, 200 records a request, ``allOrNone``
false, so one bad record does not sink its batch); large ones through Bulk API 2.0 ingest jobs
(simple-salesforce's ``bulk2``: create job, upload CSV, close, wait, failed results). Limits: the
org's remaining daily API requests (``/limits``, then the ``Sforce-Limit-Info`` header of each
answer) must stay above a reserve: the org counts every integration's requests, so its own count
is the one to read (no local request log, unlike HubSpot's per-app limits).
``--create-properties`` uses the Tooling API (``POST /tooling/sobjects/CustomField``, REST JSON),
which the Metadata API's SOAP ``createMetadata`` would do the same; new fields still need
field-level security granted to the users who should see them (docs/CRM.md).
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from propensity.pipelines.activation.crm.config import SalesforceConfig
from propensity.pipelines.activation.destinations import Destination, PushOptions
from propensity.pipelines.activation.outbox import ERROR_CHARS, parse_retry_after
from propensity.pipelines.activation.retrying import DeliveryFailure, retried
from propensity.pipelines.activation.traits import ContactTraits
from propensity.pipelines.redaction import redact

__all__ = ["SalesforceAPI", "SalesforceObjects", "ensure_fields", "field_definitions", "salesforce_from_env",
           "sf_name"]

INSTANCE_ENV, TOKEN_ENV = "SALESFORCE_INSTANCE_URL", "SALESFORCE_ACCESS_TOKEN"
CLIENT_ENV = ("SALESFORCE_CONSUMER_KEY", "SALESFORCE_CONSUMER_SECRET", "SALESFORCE_DOMAIN")


def sf_name(config: SalesforceConfig) -> Callable[[str], str]:
    """``top_reasons`` -> ``Propensity_Top_Reasons__c``."""
    return lambda name: config.field("_".join(part.capitalize() for part in name.split("_")))


def sf_value(value: object) -> object:
    return value  # Salesforce fields are typed: numbers stay numbers, None is left out by the records


class SalesforceAPI:
    """A ``simple_salesforce.Salesforce`` with limits, retries, redaction and a request count."""

    def __init__(self, sf, config: SalesforceConfig, *, secrets: Sequence[str], options: PushOptions | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.sf = sf
        self.config = config
        self.secrets = tuple(s for s in secrets if s)
        self.options = options or PushOptions()
        self._sleep = sleep
        self.requests = 0
        self.retries = 0
        self._last = None  # the last response, for its Retry-After (the client's errors do not carry headers)
        sf.session.hooks.setdefault("response", []).append(self._remember)
        self._checked_org_limit = False

    def _remember(self, response, *args, **kwargs):
        self._last = response
        self.requests += 1

    def check_daily_requests(self) -> None:
        """Stop (resumable) when the org's remaining daily API requests are at or below the reserve."""
        reserve = self.config.daily_api_requests_reserve
        usage = self.sf.api_usage.get("api-usage") if self.sf.api_usage else None
        if usage is not None:
            remaining = usage.total - usage.used
        elif not self._checked_org_limit:
            self._checked_org_limit = True
            daily = self.call("limits", self.sf.limits)["DailyApiRequests"]
            remaining = daily["Remaining"]
        else:
            return
        if remaining <= reserve:
            raise DeliveryFailure(f"Salesforce: {remaining:,} daily API requests left, at or below the reserve of "
                                  f"{reserve:,} (crm.yaml salesforce.daily_api_requests_reserve); run the push "
                                  "again later: it resumes where it stopped", retryable=False)

    def call(self, what: str, fn: Callable, *args, **kwargs):
        def attempt(number: int):
            self.retries += number > 0
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - simple-salesforce and requests raise several families
                raise self._failure(what, exc) from None

        return retried(attempt, self.options, self._sleep)

    def _failure(self, what: str, exc: Exception) -> DeliveryFailure:
        status = getattr(exc, "status", None)
        content = getattr(exc, "content", None)
        if content is None:
            return DeliveryFailure(self.redact(f"Salesforce {what}: {type(exc).__name__}: {exc}"),
                                   retryable=not isinstance(exc, (ValueError, KeyError, TypeError)))
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
        headers = self._last.headers if self._last is not None else {}
        retry_after = parse_retry_after(headers.get("Retry-After")) if status in (429, 503) else None
        # the org's daily allocation is spent: waiting minutes does not help (the code alone, not a longer one)
        limit = re.search(r"\bREQUEST_LIMIT_EXCEEDED(?![A-Z_])", text) is not None
        return DeliveryFailure(self.redact(f"Salesforce {what}: HTTP {status}: {text}"),
                               retryable=not limit and (status in (408, 429) or (status or 0) >= 500),
                               retry_after=retry_after)

    def redact(self, text: str) -> str:
        return redact(text, self.secrets, limit=ERROR_CHARS)


def salesforce_from_env(config: SalesforceConfig, *, environ: Mapping[str, str] | None = None,
                        options: PushOptions | None = None,
                        sleep: Callable[[float], None] = time.sleep) -> SalesforceAPI:
    """``$SALESFORCE_INSTANCE_URL`` + ``$SALESFORCE_ACCESS_TOKEN`` (an OAuth access token of a connected
    app), else the client-credentials flow with ``$SALESFORCE_CONSUMER_KEY``, ``..._SECRET`` and
    ``$SALESFORCE_DOMAIN`` (the My Domain name)."""
    from simple_salesforce import Salesforce

    env = os.environ if environ is None else environ
    if env.get(INSTANCE_ENV) and env.get(TOKEN_ENV):
        sf = Salesforce(instance_url=env[INSTANCE_ENV], session_id=env[TOKEN_ENV], version=config.api_version)
        secrets = (env[TOKEN_ENV],)
    elif all(env.get(name) for name in CLIENT_ENV):
        key, secret, domain = (env[name] for name in CLIENT_ENV)
        sf = Salesforce(consumer_key=key, consumer_secret=secret, domain=domain, version=config.api_version)
        secrets = (secret, key, sf.session_id)
    else:
        raise ValueError(f"Salesforce needs ${INSTANCE_ENV} and ${TOKEN_ENV} (an OAuth access token), or "
                         f"${', $'.join(CLIENT_ENV)} for a connected app's client-credentials flow (docs/CRM.md)")
    return SalesforceAPI(sf, config, secrets=secrets, options=options, sleep=sleep)


class SalesforceObjects(Destination):
    """Upserts of one object (Contact, Lead or Account) on its External ID field.

    ``bulk`` sends each batch as one Bulk API 2.0 ingest job; else as sObject Collections requests
    of up to 200 records. Refused records (``success: false``, or a job's failed results) are
    returned with Salesforce's reason and tried again on the next push.
    """

    def __init__(self, api: SalesforceAPI, sobject: str, external_id: str, *, bulk: bool) -> None:
        self.api = api
        self.sobject = sobject
        self.external_id = external_id
        self.bulk = bulk
        self.name = f"salesforce:{sobject}"
        self.secrets = api.secrets
        self._requests = 0

    def _records(self, batch: Sequence[ContactTraits]) -> list[dict]:
        return [dict(c.traits) for c in batch]

    def send(self, http, batch: Sequence[ContactTraits]) -> dict[str, str] | None:
        before = self.api.requests
        try:
            self.api.check_daily_requests()
            refused = self._bulk(batch) if self.bulk else self._collections(batch)
        finally:
            self._requests += self.api.requests - before
        return refused or None

    def _collections(self, batch: Sequence[ContactTraits]) -> dict[str, str]:
        refused: dict[str, str] = {}
        size = self.api.config.composite_batch_size
        for start in range(0, len(batch), size):
            chunk = batch[start:start + size]
            body = {"allOrNone": False, "records": [{"attributes": {"type": self.sobject}, **r}
                                                    for r in self._records(chunk)]}
            results = self.api.call(f"{self.sobject} upsert", self.api.sf.restful,
                                    f"composite/sobjects/{self.sobject}/{self.external_id}", method="PATCH", json=body)
            for contact, result in zip(chunk, results, strict=True):
                if not result.get("success"):
                    errors = "; ".join(f"{e.get('statusCode')}: {e.get('message')}" for e in result.get("errors") or [])
                    refused[contact.contact_id] = self.api.redact(errors or "refused")
        return refused

    def _bulk(self, batch: Sequence[ContactTraits]) -> dict[str, str]:
        handler = getattr(self.api.sf.bulk2, self.sobject)
        records = self._records(batch)
        columns = sorted({k for r in records for k in r})
        records = [{k: ("" if r.get(k) is None else str(r[k])) for k in columns} for r in records]
        jobs = self.api.call(f"{self.sobject} Bulk API 2.0 upsert", handler.upsert, records=records,
                             external_id_field=self.external_id,
                             wait=self.api.config.bulk_poll_seconds)
        refused: dict[str, str] = {}
        by_key = {str(c.traits.get(self.external_id)): c.contact_id for c in batch}
        for job in jobs:
            if not int(job["numberRecordsFailed"]):
                continue
            failed = self.api.call(f"{self.sobject} failed results", handler.get_failed_records, job["job_id"])
            for row in csv.DictReader(io.StringIO(failed)):
                key = by_key.get(row.get(self.external_id, ""))
                if key is not None:
                    refused[key] = self.api.redact(row.get("sf__Error") or "refused")
        return refused

    def requests_made(self, http) -> int:
        return self._requests

    def preview(self, batch: Sequence[ContactTraits]) -> dict:
        if self.bulk:
            return {"api": "Bulk API 2.0 ingest job", "object": self.sobject, "operation": "upsert",
                    "externalIdFieldName": self.external_id, "records": self._records(batch)}
        return {"method": "PATCH", "path": f"composite/sobjects/{self.sobject}/{self.external_id}",
                "json": {"allOrNone": False, "records": self._records(batch)}}


# -- fields -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldPlan:
    """One custom field ``--create-properties`` found or would create (Tooling API CustomField)."""

    object_type: str
    name: str
    label: str
    type: str
    metadata: dict
    exists: bool = False
    unique: bool = False
    field_type: str = ""


def field_definitions(config: SalesforceConfig, project: str, *, objects: Sequence[str]) -> list[FieldPlan]:
    name, title = sf_name(config), project.replace("_", " ").title()

    def number(label, precision, scale):
        return "Number", {"type": "Number", "label": label, "precision": precision, "scale": scale}

    def text(label, length=255, external=False):
        meta = {"type": "Text", "label": label, "length": length}
        if external:
            meta.update(externalId=True, unique=True, caseSensitive=False)
        return "Text", meta

    people = [("score", *number(f"{title} score (0-5)", 3, 2)), ("band", *text(f"{title} band", 40)),
              ("probability", *number(f"{title} probability", 5, 4)),
              ("top_reasons", "LongTextArea", {"type": "LongTextArea", "label": f"{title} top reasons",
                                               "length": 2000, "visibleLines": 3}),
              ("change_reason", *text(f"{title} last change", 255)),
              ("contact_id", *text(f"{title} contact id", 80, external=True))]
    accounts = [("score", *number(f"{title} account score (0-5)", 3, 2)), ("band", *text(f"{title} account band", 40)),
                ("contacts_scored", *number(f"{title} contacts scored", 9, 0)),
                ("top_contact_id", *text(f"{title} top contact", 80)),
                ("account_id", *text(f"{title} account id", 80, external=True))]
    out = []
    for sobject in objects:
        for key, kind, meta in (accounts if sobject == "Account" else people):
            size = (f"({meta['precision']}, {meta['scale']})" if "precision" in meta else f"({meta['length']})")
            out.append(FieldPlan(sobject, name(key), meta["label"], kind, meta, unique=bool(meta.get("externalId")),
                                 field_type=size + (" External ID" if meta.get("externalId") else "")))
    return out


def ensure_fields(api: SalesforceAPI, config: SalesforceConfig, project: str, *, dry_run: bool) -> list[FieldPlan]:
    """Create the missing custom fields with the Tooling API (describe first; existing ones are left alone)."""
    objects = [*config.objects, *(["Account"] if config.accounts else [])]
    wanted = field_definitions(config, project, objects=objects)
    out = []
    for sobject in objects:
        described = api.call(f"{sobject} describe", getattr(api.sf, sobject).describe)
        have = {f["name"] for f in described["fields"]}
        for plan in (w for w in wanted if w.object_type == sobject):
            if plan.name not in have and not dry_run:
                api.call(f"create {sobject}.{plan.name}", api.sf.toolingexecute, "sobjects/CustomField", method="POST",
                         json={"FullName": f"{sobject}.{plan.name}", "Metadata": plan.metadata})
            out.append(FieldPlan(**{**plan.__dict__, "exists": plan.name in have}))
    return out
