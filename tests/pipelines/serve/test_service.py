"""The service driven over real HTTP by the real Segment SDK, on SQLite and on PostgreSQL."""

from __future__ import annotations

import gzip
import json
import random
from datetime import UTC, datetime, timedelta

import httpx
import ibis
import pandas as pd
import pytest
import sqlalchemy as sa
from segment.analytics.client import Client
from segment.analytics.request import APIError

from propensity.pipelines.activation.triggers import TriggersConfig
from propensity.pipelines.rules import load_rules
from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.rules.score import score_contacts
from propensity.pipelines.serve.app import ServiceSettings
from propensity.pipelines.serve.config import ServeConfig, load_serve_config
from tests.pipelines.serve.support import ROOT, WRITE_KEY, running_server

NOW = datetime(2026, 3, 1, 12, 0, 0)
RULES = load_rules(ROOT / "configs" / "rules" / "saas.yaml")
AUTH = (WRITE_KEY, "")


def _settings(url: str, **kwargs) -> ServiceSettings:
    return ServiceSettings(database_url=url, rules=kwargs.pop("rules", RULES), write_keys=frozenset({WRITE_KEY}),
                           **kwargs)


def _sdk(base: str, **kwargs) -> Client:
    return Client(write_key=WRITE_KEY, host=base, max_retries=0, **kwargs)


def _random_calls(rng: random.Random, n_events: int, n_contacts: int) -> tuple[list[dict], dict[str, dict]]:
    kinds = [
        ("page_view", lambda: {"path": rng.choice(["/pricing", "/", "/docs"])}),
        ("trial_started", lambda: {"plan": "pro"}),
        ("feature_used", lambda: {"feature": rng.choice(["reports", "sso"])}),
        ("demo_requested", lambda: None),
        ("email_open", lambda: None),
        ("email_click", lambda: {"campaign": "spring"}),
        ("webinar_attended", lambda: None),
        ("unsubscribed", lambda: None),
        ("purchase", lambda: {"revenue": round(rng.uniform(10, 900), 2)}),
    ]
    events = []
    for i in range(n_events):
        name, props = rng.choice(kinds)
        # millisecond timestamps: the SDK sends ISO 8601 with milliseconds
        ts = NOW - timedelta(milliseconds=rng.randrange(1, 130 * 86_400_000))
        events.append({"message_id": f"msg-{i}", "user_id": f"u{rng.randrange(n_contacts)}", "event": name,
                       "properties": props(), "timestamp": ts.replace(tzinfo=UTC)})
    traits = {
        f"u{i}": {"company_size": rng.choice([10, 60, 800, 5000]), "industry": rng.choice(["software", "retail"]),
                  "email": f"u{i}@example.com"}
        for i in range(n_contacts)
    }
    return events, traits


def _stored_events(url: str) -> pd.DataFrame:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return pd.read_sql(sa.text("SELECT * FROM events"), conn)
    finally:
        engine.dispose()


def _batch_scores(stored: pd.DataFrame, traits: dict[str, dict], as_of: datetime) -> pd.DataFrame:
    events = stored.drop(columns=["received_at"]).astype(
        {"ts": "datetime64[us]", "value": "float64", "account_id": "string", "properties": "string"}
    )
    ids = sorted(events["contact_id"].unique())
    spine = pd.DataFrame({"contact_id": ids, "as_of": pd.Series([as_of] * len(ids)).astype("datetime64[us]")})
    contacts = pd.DataFrame([{"contact_id": c, **t} for c, t in traits.items()])
    con = ibis.duckdb.connect()
    scored = score_contacts(con.create_table("events", events), con.create_table("spine", spine), RULES, contacts)
    return scored.set_index("contact_id")


@pytest.mark.slow
def test_sdk_events_are_stored_once_in_the_canonical_schema_and_scored_like_propensity_score(database_url):
    rng = random.Random(7)
    calls, traits = _random_calls(rng, 400, 15)
    with running_server(_settings(database_url), clock=lambda: NOW) as (base, app):
        client = _sdk(base, gzip=True, upload_size=40, upload_interval=0.05)  # batched, gzipped, async
        for user, values in traits.items():
            client.identify(user_id=user, traits=values)
        for call in calls:
            client.track(**call)
        client.flush()
        client.shutdown()
        # a retry of every call (same messageIds) changes nothing
        again = _sdk(base, sync_mode=True)
        for call in calls[:40]:
            again.track(**call)
        scores = {u: httpx.get(f"{base}/v1/contacts/{u}/score", auth=AUTH).json() for u in traits}

    stored = _stored_events(database_url)
    assert sorted(stored["event_id"]) == sorted(c["message_id"] for c in calls)
    assert list(stored.columns[:7]) == ["event_id", "contact_id", "event_type", "ts", "value", "account_id",
                                        "properties"]
    by_id = stored.set_index("event_id")
    for call in calls[:50]:
        row = by_id.loc[call["message_id"]]
        assert row["contact_id"] == call["user_id"] and row["event_type"] == call["event"]
        assert pd.Timestamp(row["ts"]) == pd.Timestamp(call["timestamp"].replace(tzinfo=None))
        # the SDK sends {} for no properties; stored as "{}", as batch ingestion stores it
        assert json.loads(row["properties"]) == (call["properties"] or {})
        revenue = (call["properties"] or {}).get("revenue")
        assert row["value"] == (revenue if revenue is not None else 1.0)

    expected = _batch_scores(stored, traits, NOW)
    for user, body in scores.items():
        if user not in expected.index:
            continue  # identified but never tracked
        row = expected.loc[user]
        assert body["as_of"] == NOW.isoformat()
        assert body["rule_score"] == pytest.approx(row["rule_score"], abs=1e-9), user
        assert body["points"] == pytest.approx(row["points"], abs=1e-9), user
        assert body["band"] == row["band"]
        for rule, points in body["points_by_rule"].items():
            assert points == pytest.approx(row[f"points__{rule}"], abs=1e-9), (user, rule)
        reasons = [r["rule"] for r in body["top_reasons"]]
        best = sorted((p, r) for r, p in body["points_by_rule"].items() if p > 0)[::-1][:3]
        assert reasons == [r for _, r in best]
    assert expected["rule_score"].nunique() > 5  # the data spreads over the scale


def test_bad_input_is_refused_with_the_field_named_and_nothing_is_stored(tmp_path):
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    settings = _settings(url, config=ServeConfig(max_body_bytes=4_000))
    good = {"type": "track", "userId": "u1", "event": "demo_requested", "messageId": "ok-1",
            "timestamp": "2026-02-01T10:00:00Z"}
    cases = [
        ("track", {"event": "x", "messageId": "a"}, "field 'userId'"),
        ("track", {"userId": "u1", "messageId": "a"}, "field 'event'"),
        ("track", {"userId": "u1", "event": "x", "timestamp": "yesterday"}, "field 'timestamp': cannot parse"),
        ("track", {"userId": "u1", "event": "x", "timestamp": "2027-01-01T00:00:00Z"}, "more than 1 day after"),
        ("track", {"userId": "u1", "event": "x", "properties": [1, 2]}, "field 'properties'"),
        ("track", {"userId": "u1", "event": "x", "properties": {"value": "lots"}}, "field 'properties.value'"),
        ("identify", {"userId": "u1", "traits": "vip"}, "field 'traits'"),
        ("batch", {"batch": {"type": "track"}}, "field 'batch'"),
        ("batch", {"batch": [good, {"type": "track", "userId": " ", "event": "x"}]}, "batch[1], field 'userId'"),
        ("batch", {"batch": [good, {"type": "teleport", "userId": "u1"}]}, "batch[1], field 'type'"),
    ]
    with running_server(settings, clock=lambda: NOW) as (base, app):
        for kind, body, expected in cases:
            response = httpx.post(f"{base}/v1/{kind}", json=body, auth=AUTH)
            assert response.status_code == 400, (kind, body)
            assert expected in response.json()["message"], response.json()
        assert httpx.post(f"{base}/v1/track", content=b"{not json", auth=AUTH).status_code == 400
        assert httpx.post(f"{base}/v1/track", json=good, auth=("stolen", "")).status_code == 401
        assert httpx.post(f"{base}/v1/track", json=good).status_code == 401
        big = {**good, "properties": {"blob": "x" * 5_000}}
        assert httpx.post(f"{base}/v1/track", json=big, auth=AUTH).status_code == 413
        bomb = gzip.compress(json.dumps({**good, "properties": {"blob": "x" * 50_000}}).encode())
        assert len(bomb) < 4_000
        response = httpx.post(f"{base}/v1/track", content=bomb, auth=AUTH,
                              headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
        assert response.status_code == 413
        # the real SDK sees the refusal as an API error with our message
        with pytest.raises(APIError, match="timestamp"):
            _sdk(base, sync_mode=True).track(user_id="u1", event="x", timestamp=datetime(2030, 1, 1, tzinfo=UTC))
        assert httpx.get(f"{base}/v1/contacts/u1/score", auth=AUTH).status_code == 404
        metrics = httpx.get(f"{base}/metrics", auth=AUTH).text
    assert _stored_events(url).empty
    assert 'propensity_requests_total{endpoint="batch",status="400"} 4.0' in metrics  # 3 above + the SDK's


def test_health_metrics_and_the_score_endpoint(tmp_path):
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    reader = ("score-reader", "")
    settings = _settings(url, read_keys=frozenset({reader[0]}))
    with running_server(settings, clock=lambda: NOW) as (base, app):
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok", "database": "sqlite", "queue_depth": 0}
        client = _sdk(base, sync_mode=True)
        client.identify(user_id="u1", traits={"company_size": 200, "industry": "software"})
        client.track(user_id="u1", event="demo_requested", timestamp=NOW - timedelta(days=2), message_id="m1")
        client.track(user_id="u1", event="email_open", timestamp=NOW - timedelta(days=1), message_id="m2")
        client.track(user_id="u1", event="email_open", timestamp=NOW - timedelta(days=1), message_id="m2")
        body = httpx.get(f"{base}/v1/contacts/u1/score", auth=reader).json()
        later = httpx.get(f"{base}/v1/contacts/u1/score", params={"as_of": "2026-04-01T00:00:00Z"},
                          auth=reader).json()
        earlier = httpx.get(f"{base}/v1/contacts/u1/score", params={"as_of": "2026-01-01"}, auth=reader)
        metrics = httpx.get(f"{base}/metrics", auth=reader).text
        assert httpx.get(f"{base}/v1/contacts/u1/score").status_code == 401
        # with read keys set, a (possibly public) write key cannot read scores
        assert httpx.get(f"{base}/v1/contacts/u1/score", auth=AUTH).status_code == 401
    assert [r["rule"] for r in body["top_reasons"]] == ["demo_request", "company_size_target", "industry_target"]
    assert body["band"] == "hot" and body["events"] == 2
    assert body["last_change"]["at"] == NOW.isoformat() and body["last_change"]["after"] == body["rule_score"]
    assert later["as_of"] == "2026-04-01T00:00:00" and later["rule_score"] < body["rule_score"]
    assert earlier.status_code == 400 and "as_of" in earlier.json()["message"]
    assert "propensity_events_ingested_total 2.0" in metrics
    assert "propensity_events_duplicate_total 1.0" in metrics
    assert "propensity_request_to_score_seconds_count 4.0" in metrics  # 1 identify + 3 tracks
    assert "propensity_queue_depth 0.0" in metrics


def test_triggers_fire_in_the_event_commit_and_decay_drops_are_found_by_the_sweep(tmp_path):
    rules = RuleSet.model_validate({
        "name": "burst",
        "activities": [{"name": "burst", "event": "burst", "points": 100, "half_life_days": 1}],
        "scale": {0: 0, 100: 5},
        "bands": [{"name": "cold", "min_score": 0}, {"name": "warm", "min_score": 2},
                  {"name": "hot", "min_score": 3.5}],
    })
    triggers = TriggersConfig.model_validate({
        "bands": ["cold", "warm", "hot"],
        "triggers": [
            {"name": "became_hot", "kind": "band_entered", "band": "hot"},
            {"name": "went_quiet", "kind": "score_dropped", "by": 1.5, "within_days": 14},
        ],
    })
    clock = {"now": NOW}
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    with running_server(_settings(url, rules=rules, triggers=triggers), clock=lambda: clock["now"]) as (base, app):
        client = _sdk(base, sync_mode=True)
        client.track(user_id="u1", event="burst", timestamp=NOW - timedelta(minutes=1), message_id="b1")
        client.track(user_id="u2", event="other", timestamp=NOW - timedelta(minutes=1), message_id="o1")
        app_metrics = httpx.get(f"{base}/metrics", auth=AUTH).text
        clock["now"] = NOW + timedelta(days=2)  # 100 points -> 25: score 5 -> 1.25, by decay alone
        # the sweep runs on a timer (sweep_seconds); run the same writer job now
        swept = app.state.runtime["writer"].request_sweep().result(timeout=30)
        after_sweep = httpx.get(f"{base}/metrics", auth=AUTH).text
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        outbox = pd.read_sql(sa.text("SELECT trigger, contact_id, payload FROM activation_outbox ORDER BY id"), conn)
        state = conn.execute(sa.text("SELECT rule_score, previous_score FROM score_state WHERE contact_id='u1'")).one()
    engine.dispose()
    assert list(outbox["trigger"]) == ["became_hot", "went_quiet"]
    assert set(outbox["contact_id"]) == {"u1"}
    why = json.loads(outbox["payload"][0])["why_now"]
    assert why["score_after"] == pytest.approx(5 * 0.5 ** (1 / 1440), abs=1e-9)
    assert [e["event_id"] for e in why["events"]] == ["b1"]
    drop = json.loads(outbox["payload"][1])["why_now"]
    assert drop["events"] == [] and drop["score_after"] == pytest.approx(5 * 0.5 ** (2 + 1 / 1440), abs=1e-9)
    assert swept >= 1 and state.rule_score == pytest.approx(drop["score_after"])
    assert 'propensity_trigger_firings_total{source="event",trigger="became_hot"} 1.0' in app_metrics
    assert 'propensity_trigger_firings_total{source="sweep",trigger="went_quiet"} 1.0' in after_sweep


@pytest.mark.parametrize(("metrics", "docs", "expected"), [
    # the defaults: /metrics needs a read key, no docs and no schema
    (None, None, {"/metrics": 401, "/metrics+key": 200, "/docs": 404, "/openapi.json": 404}),
    ("open", True, {"/metrics": 200, "/metrics+key": 200, "/docs": 200, "/openapi.json": 200}),
    ("off", False, {"/metrics": 404, "/metrics+key": 404, "/docs": 404, "/openapi.json": 404}),
])
def test_metrics_are_keyed_and_docs_off_unless_the_config_says_otherwise(tmp_path, metrics, docs, expected):
    given = {k: v for k, v in {"metrics": metrics, "docs": docs}.items() if v is not None}
    settings = _settings(f"sqlite:///{tmp_path / 'serve.db'}", config=ServeConfig(**given))
    with running_server(settings, clock=lambda: NOW) as (base, _):
        got = {path: httpx.get(f"{base}{path.removesuffix('+key')}", auth=AUTH if path.endswith("+key") else None)
               .status_code for path in expected}
        wrong_key = httpx.get(f"{base}/metrics", auth=("stolen", "")).status_code
    assert got == expected
    assert wrong_key == (200 if metrics == "open" else expected["/metrics"])


def test_the_shipped_serve_config_loads_and_a_typo_fails(tmp_path):
    shipped = ROOT / "configs" / "serve.yaml"
    config = load_serve_config(shipped)
    assert config.max_body_bytes == 512_000 and config.write_keys_env == "PROPENSITY_WRITE_KEYS"
    assert config == ServeConfig()  # the shipped file lists the defaults
    typo = tmp_path / "serve.yaml"
    typo.write_text(shipped.read_text().replace("max_body_bytes", "max_body_byte"))
    with pytest.raises(ValueError, match="max_body_byte"):
        load_serve_config(typo)


def test_serve_refuses_to_start_without_write_keys(tmp_path, monkeypatch, capsys):
    from propensity.pipelines.cli import main

    monkeypatch.delenv("PROPENSITY_WRITE_KEYS", raising=False)
    assert main(["-w", str(tmp_path), "serve", "--port", "1"]) == 2
    assert "PROPENSITY_WRITE_KEYS" in capsys.readouterr().err


def test_triggers_whose_bands_differ_from_the_rules_are_refused_at_startup():
    triggers = TriggersConfig.model_validate({
        "bands": ["cold", "hot"],
        "triggers": [{"name": "became_hot", "kind": "band_entered", "band": "hot"}],
    })
    with pytest.raises(ValueError, match="differ from the bands of rules 'saas'"):
        _settings("sqlite://", triggers=triggers)


def test_identifies_batched_into_one_commit_keep_the_account_an_earlier_one_gave(tmp_path):
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    calls = [
        {"type": "identify", "userId": "u1", "messageId": "i1", "timestamp": NOW.isoformat(),
         "traits": {"company_id": "acme", "createdAt": "2026-01-05T00:00:00Z", "plan": "pro"}},
        {"type": "identify", "userId": "u1", "messageId": "i2", "timestamp": NOW.isoformat(),
         "traits": {"industry": "software"}},  # neither company nor createdAt: the first one's stay
    ]
    with running_server(_settings(url), clock=lambda: NOW) as (base, _):
        assert httpx.post(f"{base}/v1/batch", json={"batch": calls}, auth=AUTH).status_code == 200
    with sa.create_engine(url).connect() as conn:
        row = conn.execute(sa.text("SELECT account_id, created_at, traits FROM contacts WHERE contact_id = 'u1'")).one()
    assert row.account_id == "acme"
    assert str(row.created_at).startswith("2026-01-05")
    assert json.loads(row.traits) == {"company_id": "acme", "plan": "pro", "industry": "software"}
