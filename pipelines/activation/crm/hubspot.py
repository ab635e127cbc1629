"""HubSpot through ``hubspot-api-client``: scores as contact and company properties, and the
properties themselves (``--create-properties``).

Every call goes through :class:`HubSpotAPI`: the request limits (:mod:`.limits`), retries with
backoff and HubSpot's ``Retry-After`` on 429 (:mod:`..retrying`), and the token masked in every
message. The client's own urllib3 retries are left at their default (connection errors only): the
status retries are ours, so they are counted and bounded the same way as every other push.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from propensity.pipelines.activation.crm.config import HubSpotConfig
from propensity.pipelines.activation.crm.limits import RequestLimits
from propensity.pipelines.activation.destinations import Destination, PushOptions
from propensity.pipelines.activation.outbox import ERROR_CHARS, parse_retry_after
from propensity.pipelines.activation.retrying import DeliveryFailure, retried
from propensity.pipelines.activation.traits import ContactTraits
from propensity.pipelines.redaction import guard_http_log, redact

__all__ = ["HUBSPOT_TOKEN_ENV", "HubSpotAPI", "HubSpotObjects", "PropertyPlan", "ensure_properties",
           "hubspot_from_env", "hubspot_value", "property_definitions"]

HUBSPOT_TOKEN_ENV = "HUBSPOT_ACCESS_TOKEN"  # a private app's access token
HUBSPOT_URL_ENV = "HUBSPOT_API_URL"  # default https://api.hubapi.com (tests point it at a local server)
DEFAULT_URL = "https://api.hubapi.com"
CLIENT_PACKAGES = ("contacts", "companies", "deals", "properties", "associations.v4")


def hubspot_value(value: object) -> object:
    """HubSpot stores every property as text: numbers as their shortest form, None left out."""
    if value is None:
        return None
    if isinstance(value, float):
        return f"{value:g}" if abs(value) < 1e15 else str(value)
    return str(value)


class HubSpotAPI:
    """One ``hubspot.Client`` with limits, retries, redaction and a request count."""

    def __init__(self, token: str, config: HubSpotConfig, *, host: str = DEFAULT_URL,
                 options: PushOptions | None = None, request_log: Path | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        import hubspot

        self.host = host.rstrip("/")
        self.client = hubspot.Client.create(access_token=token, host=self.host)
        self.secrets = (token,)
        # each generated sub-package logs response bodies at DEBUG (with its `debug` on) from its own `rest` logger
        guard_http_log(self.secrets, [f"hubspot.crm.{part}.rest" for part in CLIENT_PACKAGES])
        self.options = options or PushOptions()
        self.limits = RequestLimits("hubspot", per_window=config.requests_per_10_seconds, window_seconds=10,
                                    per_day=config.daily_limit, log_path=request_log)
        self._sleep = sleep
        self.requests = 0
        self.retries = 0

    def call(self, what: str, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)`` within the limits, retried; failures as :class:`DeliveryFailure`."""
        def attempt(number: int):
            self.retries += number > 0
            self.limits.acquire()
            self.requests += 1
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - each hubspot.* sub-package has its own ApiException class
                raise self._failure(what, exc) from None

        return retried(attempt, self.options, self._sleep)

    def _failure(self, what: str, exc: Exception) -> DeliveryFailure:
        status = getattr(exc, "status", None)
        if not isinstance(status, int) or not status:  # no response: connection refused, reset, timeout
            return DeliveryFailure(self.redact(f"HubSpot {what}: {type(exc).__name__}: {exc}"), retryable=True)
        headers = getattr(exc, "headers", None) or {}
        retry_after = parse_retry_after(headers.get("Retry-After")) if status in (429, 503) else None
        if retry_after is not None and retry_after > self.options.max_retry_after_seconds:
            return DeliveryFailure(f"HubSpot {what}: HTTP {status}: asked to wait {retry_after:.0f} s (Retry-After), "
                                   f"more than {self.options.max_retry_after_seconds:.0f} s", retryable=False)
        body = getattr(exc, "body", None) or getattr(exc, "reason", "")
        body = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        return DeliveryFailure(self.redact(f"HubSpot {what}: HTTP {status}: {body}"),
                               retryable=status in (408, 425, 429) or status >= 500, retry_after=retry_after)

    def redact(self, text: str) -> str:
        return redact(text, self.secrets, limit=ERROR_CHARS)


def hubspot_from_env(config: HubSpotConfig, *, environ: Mapping[str, str] | None = None,
                     options: PushOptions | None = None, request_log: Path | None = None,
                     sleep: Callable[[float], None] = time.sleep) -> HubSpotAPI:
    """The API with the private app's token from ``$HUBSPOT_ACCESS_TOKEN`` (never from a file or option)."""
    env = os.environ if environ is None else environ
    token = env.get(HUBSPOT_TOKEN_ENV)
    if not token:
        raise ValueError(f"HubSpot needs a private app's access token in ${HUBSPOT_TOKEN_ENV} "
                         "(scopes: see docs/CRM.md)")
    return HubSpotAPI(token, config, host=env.get(HUBSPOT_URL_ENV) or DEFAULT_URL, options=options,
                      request_log=request_log, sleep=sleep)


class HubSpotObjects(Destination):
    """Batch upsert of contacts or companies (``/crm/v3/objects/{type}/batch/upsert``).

    ``keys`` maps our id (contact_id / account_id) to the value of ``id_property`` HubSpot matches on
    (an email, or our id itself). A 207 answer lists the inputs it refused in each error's
    ``context.ids``; those are returned (not recorded, tried again next push) and the rest recorded.
    An error that names no input refuses the whole batch (upsert is idempotent: resending the
    accepted ones creates nothing twice).
    """

    def __init__(self, api: HubSpotAPI, object_type: str, id_property: str, keys: Mapping[str, str]) -> None:
        if object_type not in ("contacts", "companies"):
            raise ValueError(f"HubSpot object type {object_type!r}: expected contacts or companies")
        self.api = api
        self.object_type = object_type
        self.name = f"hubspot:{object_type}"
        self.id_property = id_property
        self.keys = dict(keys)
        self.secrets = api.secrets
        self._requests = 0

    def _inputs(self, batch: Sequence[ContactTraits]) -> list[dict]:
        return [{"idProperty": self.id_property, "id": self.keys[c.contact_id], "properties": c.traits}
                for c in batch]

    def send(self, http, batch: Sequence[ContactTraits]) -> dict[str, str] | None:
        import importlib

        models = importlib.import_module(f"hubspot.crm.{self.object_type}.models")
        inputs = [models.SimplePublicObjectBatchInputUpsert(id_property=i["idProperty"], id=i["id"],
                                                            properties=i["properties"]) for i in self._inputs(batch)]
        api = getattr(self.api.client.crm, self.object_type).batch_api
        before = self.api.requests
        try:
            # the raw answer (_preload_content=False, the client's own option): turning 100 results into
            # models parses 200 timestamps with dateutil, ~40% of a push's time, for fields never read
            answer = self.api.call(f"{self.object_type} batch upsert", api.upsert,
                                   models.BatchInputSimplePublicObjectBatchInputUpsert(inputs=inputs),
                                   _preload_content=False)
        finally:
            self._requests += self.api.requests - before
        errors = json.loads(answer.data or b"{}").get("errors") or []
        if not errors:
            return None
        ours = {self.keys[c.contact_id].lower(): c.contact_id for c in batch}
        refused: dict[str, str] = {}
        for error in errors:
            message = self.api.redact(f"{error.get('category')}: {error.get('message')}")
            ids = [str(i) for i in ((error.get("context") or {}).get("ids") or [])]
            named = [ours[i.lower()] for i in ids if i.lower() in ours]
            for contact_id in named or list(ours.values()):
                refused.setdefault(contact_id, message)
        return refused

    def requests_made(self, http) -> int:
        return self._requests

    def preview(self, batch: Sequence[ContactTraits]) -> dict:
        return {"method": "POST", "url": f"{self.api.host}/crm/v3/objects/{self.object_type}/batch/upsert",
                "json": {"inputs": self._inputs(batch)}}


# -- properties ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PropertyPlan:
    """One property (or the group) ``--create-properties`` found or would create."""

    object_type: str
    name: str
    label: str
    type: str
    field_type: str
    unique: bool = False
    exists: bool = False


def property_definitions(config: HubSpotConfig, project: str) -> list[PropertyPlan]:
    """The properties a push writes, with HubSpot types (number/number, string/text or textarea)."""
    p, title = config.prop, project.replace("_", " ").title()
    contacts = [
        PropertyPlan("contacts", p("score"), f"{title} score (0-5)", "number", "number"),
        PropertyPlan("contacts", p("band"), f"{title} band", "string", "text"),
        PropertyPlan("contacts", p("probability"), f"{title} probability", "number", "number"),
        PropertyPlan("contacts", p("top_reasons"), f"{title} top reasons", "string", "textarea"),
        PropertyPlan("contacts", p("change_reason"), f"{title} last change", "string", "textarea"),
        PropertyPlan("contacts", p("contact_id"), f"{title} contact id", "string", "text", unique=True),
    ]
    companies = [
        PropertyPlan("companies", p("score"), f"{title} account score (0-5)", "number", "number"),
        PropertyPlan("companies", p("band"), f"{title} account band", "string", "text"),
        PropertyPlan("companies", p("contacts_scored"), f"{title} contacts scored", "number", "number"),
        PropertyPlan("companies", p("top_contact_id"), f"{title} top contact", "string", "text"),
        PropertyPlan("companies", p("account_id"), f"{title} account id", "string", "text", unique=True),
    ]
    return contacts + (companies if config.companies else [])


def ensure_properties(api: HubSpotAPI, config: HubSpotConfig, project: str, *, dry_run: bool) -> list[PropertyPlan]:
    """Create the property group ``project`` and every missing property, per object type.

    Returns every property with ``exists`` set as found before; with ``dry_run`` only reads.
    Existing properties are never changed (a type that differs is the user's to settle).
    """
    import hubspot.crm.properties as props

    wanted = property_definitions(config, project)
    out: list[PropertyPlan] = []
    for object_type in dict.fromkeys(w.object_type for w in wanted):
        groups = api.call(f"{object_type} property groups", api.client.crm.properties.groups_api.get_all, object_type)
        existing = api.call(f"{object_type} properties", api.client.crm.properties.core_api.get_all, object_type)
        have = {prop.name for prop in existing.results}
        mine = [w for w in wanted if w.object_type == object_type]
        missing = [w for w in mine if w.name not in have]
        if not dry_run and missing and project not in {g.name for g in groups.results}:
            api.call(f"{object_type} property group", api.client.crm.properties.groups_api.create, object_type,
                     props.PropertyGroupCreate(name=project, label=project.replace("_", " ").title()))
        if not dry_run and missing:
            api.call(f"{object_type} properties batch create", api.client.crm.properties.batch_api.create, object_type,
                     props.BatchInputPropertyCreate(inputs=[props.PropertyCreate(
                         name=w.name, label=w.label, type=w.type, field_type=w.field_type, group_name=project,
                         has_unique_value=w.unique, form_field=False) for w in missing]))
        out += [PropertyPlan(**{**w.__dict__, "exists": w.name in have}) for w in mine]
    return out
