"""`propensity push`, `propensity outbox ...` and `propensity triggers check` end to end."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from propensity.pipelines.activation.outbox import verify_signature
from propensity.pipelines.activation.triggers import ScoreChange, TriggerEngine, load_triggers
from propensity.pipelines.cli import main
from propensity.pipelines.serve.db import database_url, make_engine

KEY = "wk_cli_s3cret_77"
SECRET = "whsec-cli-1"


def scores(n=5, bump=0.0):
    return pd.DataFrame({"contact_id": [f"p{i}" for i in range(n)], "as_of": pd.Timestamp("2026-03-01"),
                         "rule_score": [0.8 * i + bump for i in range(n)], "band": ["cold"] * n,
                         "points__demo_request": [10.0 * i for i in range(n)]})


def test_push_sends_changed_contacts_and_never_prints_the_key(tmp_path, receiver, monkeypatch, capsys):
    monkeypatch.setenv("SEGMENT_WRITE_KEY", KEY)
    monkeypatch.setenv("SEGMENT_URL", receiver.url)
    path = tmp_path / "scores.parquet"
    scores().to_parquet(path)
    ws = ["--workspace", str(tmp_path / "ws")]
    assert main([*ws, "push", "--to", "segment", "--from", str(path), "--dry-run"]) == 0
    assert receiver.received == []
    assert main([*ws, "push", "--to", "segment", "--from", str(path), "--batch-size", "2"]) == 0
    assert len(receiver.received) == 3
    assert main([*ws, "push", "--to", "segment", "--from", str(path)]) == 0
    assert len(receiver.received) == 3  # nothing changed
    out = capsys.readouterr().out
    assert "would send 5 in 3 batch(es)" in out.replace("\n", " ") or "would send 5" in out
    assert "5 unchanged since the last push; sent 0" in " ".join(out.split())
    # the state lives in the service database of the workspace
    assert (tmp_path / "ws" / "serve.db").exists()

    receiver.default = (401, {}, f"rejected key {KEY}".encode())  # refused: not retried
    scores(bump=0.3).to_parquet(path)
    assert main([*ws, "push", "--to", "segment", "--from", str(path), "--batch-size", "5"]) == 1
    captured = capsys.readouterr()
    assert "push failed" in captured.err and "HTTP 401" in " ".join(captured.err.split())
    assert KEY not in captured.err + captured.out


def test_push_reads_the_services_score_table(tmp_path, receiver, monkeypatch, capsys):
    import sqlalchemy as sa

    from propensity.pipelines.serve import db

    monkeypatch.setenv("SEGMENT_WRITE_KEY", KEY)
    monkeypatch.setenv("SEGMENT_URL", receiver.url)
    engine = make_engine(database_url(tmp_path))
    db.create_tables(engine)
    now = dt.datetime(2026, 3, 1)
    with engine.begin() as conn:
        conn.execute(sa.insert(db.score_state), [
            {"contact_id": "s1", "state": "{}", "scored_at": now, "points": 80.0, "rule_score": 3.1, "band": "warm"},
            {"contact_id": "s2", "state": "{}", "scored_at": now, "points": 5.0, "rule_score": 0.2, "band": "cold"}])
    engine.dispose()
    assert main(["--workspace", str(tmp_path), "push", "--to", "segment", "--from", "score_state"]) == 0
    calls = {c["userId"]: c["traits"] for r in receiver.received for c in r.json()["batch"]}
    assert calls == {"s1": {"intent_score": 3.1, "intent_band": "warm"},
                     "s2": {"intent_score": 0.2, "intent_band": "cold"}}
    assert main(["--workspace", str(tmp_path), "push", "--to", "segment", "--from", "no_such_table"]) == 2
    assert "no table 'no_such_table'" in capsys.readouterr().err


def test_push_without_credentials_is_a_usage_error_naming_the_variable(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SEGMENT_WRITE_KEY", raising=False)
    assert main(["--workspace", str(tmp_path), "push", "--to", "segment", "--from", "x.parquet"]) == 2
    assert "SEGMENT_WRITE_KEY" in capsys.readouterr().err


def test_outbox_commands_deliver_dead_letter_list_and_replay(tmp_path, receiver, monkeypatch, capsys):
    config = tmp_path / "triggers.yaml"
    config.write_text("bands: [cold, warm, hot]\ndelivery: {max_attempts: 1}\n"
                      "triggers:\n  - {name: became_hot, kind: band_entered, band: hot}\n")
    engine = make_engine(database_url(tmp_path))
    from propensity.pipelines.activation.tables import create_activation_tables

    create_activation_tables(engine)
    with engine.begin() as conn:
        TriggerEngine(load_triggers(config)).evaluate(
            conn, ScoreChange("lead-1", dt.datetime(2026, 3, 1), 3.0, 3.6, "warm", "hot", 70.0, 120.0, []))
    engine.dispose()
    monkeypatch.setenv("PROPENSITY_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("PROPENSITY_WEBHOOK_SECRET", SECRET)
    ws = ["--workspace", str(tmp_path)]

    receiver.default = (503, {}, b"down")
    assert main([*ws, "outbox", "deliver", "--triggers", str(config)]) == 0
    assert "dead-lettered 1" in capsys.readouterr().out
    assert main([*ws, "outbox", "list", "--dead"]) == 0
    listed = capsys.readouterr().out
    assert "became_hot" in listed and "lead-1" in listed and "HTTP 503" in listed

    receiver.default = (200, {}, b"{}")
    assert main([*ws, "outbox", "replay", "--dead"]) == 0
    assert main([*ws, "outbox", "deliver", "--triggers", str(config)]) == 0
    assert "delivered 1" in capsys.readouterr().out
    assert len(receiver.received) == 2
    assert verify_signature(SECRET, receiver.received[-1].headers["x-propensity-signature"], receiver.received[-1].body)
    assert main([*ws, "outbox", "list"]) == 0
    assert "delivered" in capsys.readouterr().out
    assert main([*ws, "outbox", "replay", "42"]) == 2


def test_triggers_check_lists_the_shipped_triggers_and_rejects_a_bad_file(tmp_path, capsys):
    assert main(["triggers", "check"]) == 0
    out = capsys.readouterr().out
    assert "became_pql" in out and "score_dropped" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("triggers:\n  - {name: x, kind: nope}\n")
    assert main(["triggers", "check", str(bad)]) == 2
    assert "bad.yaml" in capsys.readouterr().err
    assert "holdout" not in out  # the shipped file holds nobody out
    held = tmp_path / "held.yaml"
    held.write_text("bands: [cold, hot]\ntriggers:\n  - {name: x, kind: band_entered, band: hot}\n"
                    "holdout: {experiment: e7, share: 0.15, triggers: [x], window_days: 14, outcome: won}\n")
    assert main(["triggers", "check", str(held)]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "holdout e7: 15% of contacts held out of x and pushes; `propensity lift` counts won within 14 days" in said


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    # rich wraps at the terminal width; tests read whole lines
    monkeypatch.setenv("COLUMNS", "200")


def test_a_dry_run_at_the_default_batch_size_prints_a_faithful_summary_and_can_write_every_request(
        tmp_path, receiver, monkeypatch, capsys):
    # issue 12, trap 10: 100 identify calls are over 20,000 characters of JSON; the text was cut
    # there and then parsed, so the dry run crashed
    import json

    monkeypatch.setenv("SEGMENT_WRITE_KEY", KEY)
    monkeypatch.setenv("SEGMENT_URL", receiver.url)
    path = tmp_path / "scores.parquet"
    scores(n=250).to_parquet(path)
    ws = ["--workspace", str(tmp_path / "ws")]
    out_file = tmp_path / "preview.jsonl"
    assert main([*ws, "push", "--to", "segment", "--from", str(path), "--dry-run"]) == 0  # rc 2 before
    out = " ".join(capsys.readouterr().out.split())
    assert "would send 250 in 3 batch(es)" in out
    assert "97 more item(s) not shown" in out and "... and 97 more in this batch" in out
    assert '"userId": "p0"' in out and '"userId": "p2"' in out and '"userId": "p3"' not in out
    assert main([*ws, "push", "--to", "segment", "--from", str(path), "--dry-run", "--preview-out", str(out_file)]) == 0
    requests = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [len(r["json"]["batch"]) for r in requests] == [100, 100, 50]
    assert [c["userId"] for r in requests for c in r["json"]["batch"]] == [f"p{i}" for i in range(250)]
    assert KEY not in out_file.read_text() + out
    assert receiver.received == []
    assert main([*ws, "push", "--to", "segment", "--from", str(path), "--preview-out", str(out_file)]) == 2


def test_push_with_a_holdout_leaves_held_out_contacts_out_and_says_how_many(tmp_path, receiver, monkeypatch, capsys):
    from propensity.pipelines.activation.holdout import held_out_by_hash

    monkeypatch.setenv("SEGMENT_WRITE_KEY", KEY)
    monkeypatch.setenv("SEGMENT_URL", receiver.url)
    path = tmp_path / "scores.parquet"
    scores(n=40).to_parquet(path)
    triggers = tmp_path / "triggers.yaml"
    triggers.write_text("holdout: {experiment: cli-exp, share: 0.3}\n")
    held = {f"p{i}" for i in range(40) if held_out_by_hash("cli-exp", f"p{i}", 0.3)}
    ws = ["--workspace", str(tmp_path / "ws")]
    assert main([*ws, "push", "--to", "segment", "--from", str(path), "--triggers", str(triggers)]) == 0
    sent = {call["userId"] for r in receiver.received for call in r.json()["batch"]}
    assert sent == {f"p{i}" for i in range(40)} - held and held
    out = " ".join(capsys.readouterr().out.split())
    assert f"{len(held)} changed contact(s) held out (experiment cli-exp)" in out
    # without a triggers file of the workspace's own, nobody is held out
    scores(n=40, bump=1.0).to_parquet(path)
    assert main([*ws, "push", "--to", "segment", "--from", str(path)]) == 0
    assert len({call["userId"] for r in receiver.received for call in r.json()["batch"]}) == 40
