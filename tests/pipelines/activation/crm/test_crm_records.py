"""Pure: scores as traits -> CRM records and account roll-ups (no CRM, no extra needed)."""

from propensity.pipelines.activation.crm.records import account_scores, crm_records
from propensity.pipelines.activation.push import ContactTraits, fingerprint


def traits(contact_id, score, band=None):
    t = {"intent_score": score, **({"intent_band": band} if band else {})}
    return ContactTraits(contact_id, t, fingerprint(t))


def test_an_account_takes_its_best_contact_and_a_tie_goes_to_the_smaller_id():
    contacts = [traits("c2", 3.0, "warm"), traits("c1", 3.0, "hot"), traits("c3", 1.0), traits("c9", 4.9)]
    scores = account_scores(contacts, {"c1": "a", "c2": "a", "c3": "a", "c9": ""})
    assert [(s.account_id, s.score, s.band, s.contacts_scored, s.top_contact_id) for s in scores] == [
        ("a", 3.0, "hot", 3, "c1")]  # c9 has no account: in no roll-up


def test_a_record_carries_exactly_the_fields_sent_and_its_fingerprint_changes_with_them():
    contact = ContactTraits("c1", {"intent_score": 2.5, "top_reasons": ["demo", "pricing"]}, "x")
    (record,) = crm_records([contact], lambda n: f"p_{n}", str)
    assert record.traits == {"p_score": "2.5", "p_top_reasons": "demo; pricing", "p_contact_id": "c1"}
    (moved,) = crm_records([ContactTraits("c1", {"intent_score": 2.6}, "x")], lambda n: f"p_{n}", str)
    assert moved.fingerprint != record.fingerprint
