"""The CLI end to end, through `main(argv)`, on a real workspace in a temporary folder."""

from pathlib import Path

import pandas as pd
import pytest

from propensity.pipelines.cli import main
from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world

ROOT = Path(__file__).resolve().parents[2]
SAAS = ROOT / "configs" / "rules" / "saas.yaml"
AS_OF = "2025-03-15"


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    world = generate_world(WorldConfig(contacts=400, days=90, seed=3))
    write_world(world, out, fmt="csv")
    return out


@pytest.fixture(scope="module")
def loaded(world_dir, tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    for kind in ("contacts", "events", "outcomes"):
        assert main(["-w", str(ws), "ingest", kind, str(world_dir / f"{kind}.csv")]) == 0
    return ws


def test_reingesting_the_same_file_adds_nothing(loaded, world_dir, capsys):
    assert main(["-w", str(loaded), "ingest", "events", str(world_dir / "events.csv")]) == 0
    out = capsys.readouterr().out
    assert "loaded 0" in out and "duplicates" in out


def test_features_command_writes_one_row_per_known_contact(loaded, tmp_path):
    out = tmp_path / "features.parquet"
    assert main(["-w", str(loaded), "features", "--as-of", AS_OF, "--out", str(out)]) == 0
    frame = pd.read_parquet(out)
    assert frame["contact_id"].is_unique
    assert {"all__count_30d", "feature_used__decayed_7d", "tenure_days", "industry"} <= set(frame.columns)
    assert (frame["as_of"] == pd.Timestamp(AS_OF)).all()


def test_features_command_says_what_auto_chose(loaded, tmp_path, capsys):
    config = tmp_path / "features.yaml"
    config.write_text("windows_days: auto\nhalf_lives_days: [3]\n")
    out = tmp_path / "features.parquet"
    assert main(["-w", str(loaded), "features", "--as-of", AS_OF, "--config", str(config), "--out", str(out)]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "feature config `auto`: windows [" in said and "30 days assumed" in said
    assert "purchase-like types (values that vary): ['purchase']" in said
    frame = pd.read_parquet(out)
    assert "purchase__rfm_frequency" in frame.columns and "feature_used__decayed_3d" in frame.columns


def test_score_command_writes_points_that_add_up(loaded, tmp_path):
    out = tmp_path / "scores.csv"
    assert main(["-w", str(loaded), "score", "--rules", str(SAAS), "--as-of", AS_OF, "--out", str(out)]) == 0
    scored = pd.read_csv(out)
    assert list(scored.columns[:5]) == ["contact_id", "as_of", "points", "rule_score", "band"]
    parts = scored.filter(like="points__").sum(axis=1)
    assert (parts - scored["points"]).abs().max() < 1e-9
    assert scored["rule_score"].between(0, 5).all()
    assert scored["points"].gt(0).any()


def test_account_level_scores_roll_contacts_up(loaded, tmp_path):
    out = tmp_path / "accounts.parquet"
    args = ["-w", str(loaded), "score", "--rules", str(SAAS), "--as-of", AS_OF, "--level", "account", "--out", str(out)]
    assert main(args) == 0
    accounts = pd.read_parquet(out)
    assert accounts["account_id"].is_unique
    assert {"contacts", "rule_score", "band", "contacts_hot_or_above"} <= set(accounts.columns)


def test_a_bad_as_of_is_a_clear_usage_error(loaded, capsys):
    assert main(["-w", str(loaded), "features", "--as-of", "next tuesday"]) == 2
    assert "ISO 8601" in capsys.readouterr().err


def test_usage_errors_are_messages_with_exit_code_2_not_tracebacks(loaded, capfd):
    assert main(["-w", str(loaded), "score", "--no-such-option"]) == 2
    assert main(["-w", str(loaded), "score", "--as-of", AS_OF, "--spine", "x"]) == 2  # both
    err = capfd.readouterr().err
    assert "No such option: --no-such-option" in err and "one of --as-of DATE or --spine" in err
    assert "Traceback" not in err


def test_score_without_a_cut_off_scores_after_the_latest_event_and_says_so(loaded, tmp_path, capfd):
    from propensity.features.store import Workspace
    from propensity.pipelines.explain.jobs import default_as_of

    expected = default_as_of(Workspace(loaded))
    out = tmp_path / "now.csv"
    assert main(["-w", str(loaded), "score", "--out", str(out)]) == 0
    assert f"cut-off {expected:%Y-%m-%d %H:%M} (no --as-of" in capfd.readouterr().err
    scored = pd.read_csv(out, parse_dates=["as_of"])
    assert set(scored["as_of"]) == {pd.Timestamp(expected)}


def test_scoring_an_empty_workspace_says_what_to_run_first(tmp_path, capsys):
    assert main(["-w", str(tmp_path / "empty"), "score", "--as-of", AS_OF]) == 2
    assert "propensity ingest events" in capsys.readouterr().err


def test_bad_rows_are_rejected_with_file_row_and_field(tmp_path, capsys):
    bad = tmp_path / "events.csv"
    bad.write_text("contact_id,event_type,ts\nc1,page_view,2025-01-01T10:00:00Z\n,page_view,2025-01-01\nc2,demo,yesterday\n")
    ws = tmp_path / "ws"
    assert main(["-w", str(ws), "ingest", "events", str(bad)]) == 0
    out = capsys.readouterr().out
    assert "loaded 1" in out and "rejected 2" in out
    rejects = list((ws / "rejects").glob("*.csv"))
    assert rejects, "rejected rows must be written to the workspace"
    text = rejects[0].read_text()
    assert "yesterday" in text and "ts" in text


def test_generate_writes_a_world_with_truth(tmp_path):
    out = tmp_path / "gen"
    assert main(["generate", "--contacts", "300", "--days", "60", "--seed", "1", "--out", str(out),
                 "--truth-as-of", "2025-02-01"]) == 0
    truth = pd.read_parquet(next(out.glob("truth*.parquet")))
    assert truth["true_probability"].between(0, 1).all()
    assert (out / "events.parquet").exists()


@pytest.mark.slow
def test_demo_runs_end_to_end_and_says_where_the_outputs_are(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert main(["-w", str(ws), "demo", "--contacts", "2000", "--days", "120", "--no-train"]) == 0
    out = capsys.readouterr().out
    assert "conversion" in out and str(ws) in out
    assert (ws / "propensity.duckdb").exists()
    assert list((ws / "scores").glob("*.parquet"))


def test_score_streams_csv_to_stdout_with_the_summary_on_stderr(loaded, capsys):
    import io

    assert main(["-w", str(loaded), "score", "--rules", str(SAAS), "--as-of", AS_OF, "--out", "-"]) == 0
    captured = capsys.readouterr()
    frame = pd.read_csv(io.StringIO(captured.out))
    assert {"contact_id", "rule_score", "band"} <= set(frame.columns) and frame["contact_id"].is_unique
    assert "rows -> stdout (CSV)" in captured.err


def test_score_json_summarises_rows_and_bands(loaded, tmp_path, capsys):
    import json

    out = tmp_path / "s.csv"
    assert main(["-w", str(loaded), "score", "--rules", str(SAAS), "--as-of", AS_OF, "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == len(pd.read_csv(out)) and sum(summary["bands"].values()) == summary["rows"]
    assert summary["rules"]["name"] == "saas" and summary["output"] == str(out)


@pytest.mark.parametrize(("args", "message"), [
    (["--level", "team"], "must be contact or account"),
    (["--out", "scores.xlsx"], "unknown output format '.xlsx'"),
])
def test_bad_score_options_fail_before_any_work(tmp_path, capsys, args, message):
    # an empty workspace: any work would fail on the missing events instead
    assert main(["-w", str(tmp_path / "empty"), "score", "--as-of", AS_OF, *args]) == 2
    assert message in " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert not (tmp_path / "empty").exists()


def test_serve_says_when_its_store_lacks_the_workspace_history(loaded, tmp_path):
    from datetime import datetime

    import sqlalchemy as sa

    from propensity.features.store import Workspace
    from propensity.pipelines.cli.activation import _history_note
    from propensity.pipelines.serve.db import create_tables
    from propensity.pipelines.serve.db import events as events_table

    ws = Workspace(loaded)
    batch = ws.counts()["events"]
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    assert f"holds 0 events, the workspace {batch:,}" in _history_note(url, ws)  # no store yet
    engine = sa.create_engine(url)
    create_tables(engine)
    events = ws.ibis_connection().table("events").execute()
    columns = [c.name for c in events_table.columns if c.name in events.columns]
    rows = events[columns].astype(object).where(events[columns].notna(), None).to_dict("records")
    with engine.begin() as connection:  # the history sent through the service: nothing to say
        connection.execute(events_table.insert(), [{**row, "received_at": datetime.now()} for row in rows])
    engine.dispose()
    assert _history_note(url, ws) is None
    assert _history_note(url, Workspace(tmp_path / "empty")) is None
