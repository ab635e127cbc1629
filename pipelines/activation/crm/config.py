"""CRMConfig (configs/crm.yaml): what ``push --to hubspot|salesforce`` writes and ``ingest --from`` reads.

One file for both directions and both CRMs: the push side (which properties, matched on what,
the vendor's limits) and the pull side (which deal stages are outcomes, which properties are fit
attributes) name the same records, and neither belongs in the triggers file (holdouts, firings)
or a training config. Credentials are never in it: :mod:`.credentials` reads the environment.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from propensity.pipelines.config_files import load_yaml_config

__all__ = ["CRMConfig", "CRMConfigError", "HubSpotConfig", "SalesforceConfig", "load_crm_config"]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class CRMConfigError(ValueError):
    """configs/crm.yaml is missing or invalid (the message names the file and key)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HubSpotPull(_Frozen):
    # a won deal with no contact but an account: "reject" it (a reject naming the deal), or "contacts":
    # one outcome for each workspace contact of that account (the account's id in the CRM -> ours)
    account_deals: Literal["reject", "contacts"] = "reject"
    pipeline: str | None = None
    won_stages: tuple[str, ...] = ("closedwon",)
    outcome: str = "closed_won"
    contact_properties: tuple[str, ...] = ()


class HubSpotConfig(_Frozen):
    # "email", or "contact_id": the unique custom property <prefix>contact_id holding ours
    match: Literal["email", "contact_id"] = "email"
    email_column: str = "email"
    property_prefix: str = "propensity_"
    companies: bool = True
    batch_size: int = Field(100, ge=1, le=100)  # HubSpot's batch endpoints take 100 inputs at most
    requests_per_10_seconds: int = Field(100, ge=1)
    daily_limit: int = Field(250_000, ge=1)
    pull: HubSpotPull = HubSpotPull()

    @field_validator("property_prefix")
    @classmethod
    def _internal_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("HubSpot internal names are lower case letters, digits and _ (starting with a letter)")
        return value

    def prop(self, name: str) -> str:
        return f"{self.property_prefix}{name}"

    @property
    def contact_id_property(self) -> str:
        """The unique property holding our contact_id (written on every pushed contact)."""
        return self.prop("contact_id")

    @property
    def account_id_property(self) -> str:
        return self.prop("account_id")


class SalesforcePull(_Frozen):
    # a won deal with no contact but an account: "reject" it (a reject naming the deal), or "contacts":
    # one outcome for each workspace contact of that account (the account's id in the CRM -> ours)
    account_deals: Literal["reject", "contacts"] = "reject"
    won_stages: tuple[str, ...] = ("Closed Won",)
    outcome: str = "closed_won"
    contact_fields: tuple[str, ...] = ()


class SalesforceConfig(_Frozen):
    objects: tuple[str, ...] = ("Contact", "Lead")
    # a contacts table column naming each contact's object (Contact or Lead; `ingest contacts --from
    # salesforce` writes it); a contact without one goes to the first of `objects`
    object_column: str = "salesforce_object"
    field_prefix: str = "Propensity_"
    accounts: bool = True
    api_version: str = "60.0"
    bulk_threshold: int = Field(2000, ge=0)
    bulk_poll_seconds: int = Field(5, ge=0)  # first wait for a Bulk API 2.0 job, then simple-salesforce backs off
    composite_batch_size: int = Field(200, ge=1, le=200)  # sObject Collections take 200 records at most
    daily_api_requests_reserve: int = Field(1000, ge=0)
    pull: SalesforcePull = SalesforcePull()

    @field_validator("objects")
    @classmethod
    def _people(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - {"Contact", "Lead"})
        if unknown or not value:
            raise ValueError(f"objects are Contact and/or Lead, not {', '.join(unknown) or 'none'}")
        return value

    def field(self, name: str) -> str:
        return f"{self.field_prefix}{name}__c"

    @property
    def contact_id_field(self) -> str:
        return self.field("Contact_Id")

    @property
    def account_id_field(self) -> str:
        return self.field("Account_Id")


class CRMConfig(_Frozen):
    project: str = "propensity"
    hubspot: HubSpotConfig = HubSpotConfig()
    salesforce: SalesforceConfig = SalesforceConfig()


def load_crm_config(path: str | Path) -> CRMConfig:
    """Read and validate a CRM YAML file (an empty file: the defaults)."""
    return load_yaml_config(path, CRMConfig, CRMConfigError, not_found="CRM config not found",
                            invalid="invalid CRM config", empty_ok=True)
