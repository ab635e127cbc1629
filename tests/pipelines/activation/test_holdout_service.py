"""The holdout in the running service: the real SDK sends events, the service fires triggers in its
commit and delivers its outbox to a local receiver; held-out contacts' firings are recorded, never sent."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import sqlalchemy as sa
from propensity.pipelines.activation.holdout import held_out_by_hash
from propensity.pipelines.activation.outbox import verify_signature
from propensity.pipelines.activation.triggers import TriggersConfig
from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.serve.app import ServiceSettings
from propensity.pipelines.serve.config import ServeConfig
from segment.analytics.client import Client

from tests.pipelines.serve.support import WRITE_KEY, running_server

NOW = datetime(2026, 3, 1, 12, 0, 0)
SECRET = "whsec-service-holdout"
RULES = RuleSet.model_validate({
    "name": "burst", "activities": [{"name": "burst", "event": "burst", "points": 100, "half_life_days": 1}],
    "scale": {0: 0, 100: 5},
    "bands": [{"name": "cold", "min_score": 0}, {"name": "warm", "min_score": 2}, {"name": "hot", "min_score": 3.5}]})
TRIGGERS = TriggersConfig.model_validate({
    "bands": ["cold", "warm", "hot"],
    "triggers": [{"name": "became_hot", "kind": "band_entered", "band": "hot"}],
    "holdout": {"experiment": "svc", "share": 0.3}})


def test_the_service_records_held_out_firings_and_delivers_only_the_treated(tmp_path, receiver, monkeypatch):
    monkeypatch.setenv("PROPENSITY_WEBHOOK_URL", receiver.url + "/hook")
    monkeypatch.setenv("PROPENSITY_WEBHOOK_SECRET", SECRET)
    contacts = [f"u{i}" for i in range(40)]
    held = {c for c in contacts if held_out_by_hash("svc", c, 0.3)}
    assert 3 < len(held) < 37
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    settings = ServiceSettings(database_url=url, rules=RULES, write_keys=frozenset({WRITE_KEY}),
                               config=ServeConfig(deliver_seconds=0.05), triggers=TRIGGERS)
    with running_server(settings, clock=lambda: NOW) as (base, _):
        client = Client(write_key=WRITE_KEY, host=base, max_retries=0, sync_mode=True)
        for i, contact in enumerate(contacts):
            client.track(user_id=contact, event="burst", message_id=f"m{i}",
                         timestamp=(NOW - timedelta(minutes=1)).replace(tzinfo=UTC))
        deadline = time.monotonic() + 20
        while len(receiver.received) < len(contacts) - len(held) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # a few more delivery rounds: nothing else may arrive
    sent = [r.json()["contact_id"] for r in receiver.received]
    assert sorted(sent) == sorted(set(contacts) - held)
    assert all(verify_signature(SECRET, r.headers.get("x-propensity-signature"), r.body) for r in receiver.received)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        firings = set(conn.execute(sa.text("SELECT contact_id FROM activation_trigger_firings")).scalars())
        outbox = set(conn.execute(sa.text("SELECT contact_id FROM activation_outbox")).scalars())
        exposures = pd.read_sql(sa.text("SELECT * FROM activation_holdout_exposures"), conn)
        groups = dict(conn.execute(sa.text("SELECT contact_id, held_out FROM activation_holdout_assignments")).all())
    engine.dispose()
    assert firings == set(contacts) and outbox == set(contacts) - held
    assert {c for c, h in groups.items() if h} == held and len(groups) == len(contacts)
    assert set(exposures["contact_id"]) == set(contacts) and set(exposures["band"]) == {"hot"}
