"""configs/crm.yaml: the shipped file loads; a typo or a wrong value fails naming file and key."""

import pytest

from propensity.pipelines.activation.crm.config import CRMConfigError, load_crm_config
from propensity.pipelines.shipped import shipped_config


def test_the_shipped_crm_config_loads():
    config = load_crm_config(shipped_config("crm.yaml"))
    assert config.hubspot.match == "email" and config.hubspot.batch_size == 100
    assert config.salesforce.contact_id_field == "Propensity_Contact_Id__c"


def test_an_unknown_key_or_a_bad_value_fails_naming_the_file_and_the_key(tmp_path):
    bad = tmp_path / "crm.yaml"
    bad.write_text("hubspot:\n  batchsize: 10\n")
    with pytest.raises(CRMConfigError, match=r"crm\.yaml: invalid CRM config: hubspot\.batchsize"):
        load_crm_config(bad)
    bad.write_text("hubspot:\n  batch_size: 500\n")  # HubSpot's batch endpoints take 100 at most
    with pytest.raises(CRMConfigError, match=r"hubspot\.batch_size"):
        load_crm_config(bad)
    bad.write_text("salesforce:\n  objects: [Opportunity]\n")
    with pytest.raises(CRMConfigError, match=r"salesforce\.objects"):
        load_crm_config(bad)
