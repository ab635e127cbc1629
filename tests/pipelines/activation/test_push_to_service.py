"""`push --to segment` into propensity's own service: its /v1/batch is a Segment-spec endpoint."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
import uvicorn

from propensity.pipelines.activation.push import PushOptions, destination_from_env, push, traits_from_scores
from propensity.pipelines.rules import load_rules
from propensity.pipelines.serve import db
from propensity.pipelines.serve.app import ServiceSettings, create_app

RULES = Path(__file__).resolve().parents[3] / "configs" / "rules" / "saas.yaml"
WRITE_KEY = "svc-write-key-1"


def test_scores_pushed_to_the_service_become_contact_traits(tmp_path, sqlite_db):
    url = f"sqlite:///{tmp_path / 'service.db'}"
    settings = ServiceSettings(database_url=url, rules=load_rules(RULES), write_keys=frozenset({WRITE_KEY}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
        time.sleep(0.02)
    try:
        scores = pd.DataFrame({"contact_id": ["u1", "u2", "u3"], "as_of": pd.Timestamp("2026-03-01"),
                               "rule_score": [4.2, 1.0, 2.6], "band": ["hot", "cold", "warm"],
                               "points__demo_request": [150.0, 0.0, 20.0], "points__pricing_page": [12.0, 5.0, 30.0]})
        env = {"SEGMENT_WRITE_KEY": WRITE_KEY, "SEGMENT_URL": f"http://127.0.0.1:{port}"}
        report = push(sqlite_db, destination_from_env("segment", env), traits_from_scores(scores),
                      options=PushOptions(batch_size=2, rate=100))
    finally:
        server.should_exit = True
        thread.join(30)
    assert report.sent == 3 and report.batches == 2
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        traits = {r.contact_id: json.loads(r.traits) for r in conn.execute(sa.select(db.contacts))}
    engine.dispose()
    assert traits["u1"] == {"intent_score": 4.2, "intent_band": "hot", "top_reasons": ["demo_request", "pricing_page"]}
    assert traits["u3"]["top_reasons"] == ["pricing_page", "demo_request"]
    assert set(traits) == {"u1", "u2", "u3"}
