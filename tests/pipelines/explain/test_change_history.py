"""`explain --since` reads the attributes, rules and model valid at the earlier date from the workspace's
history, equal to passing them by hand (real workspace, DuckDB, the SaaS rules)."""

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from propensity import Project
from propensity.pipelines.cli import main
from propensity.pipelines.project.definitions import (
    model_at,
    record_model,
    record_rules,
    rules_at,
    rules_hash,
)
from propensity.pipelines.rules.config import load_rules
from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world

ROOT = Path(__file__).resolve().parents[3]
SAAS = ROOT / "configs/rules/saas.yaml"
SINCE, UNTIL = "2025-03-01", "2025-03-20"


@pytest.fixture(scope="module")
def two_ingests(tmp_path_factory):
    """A workspace whose contacts were ingested twice: on 2025-03-10 some moved into a target industry."""
    data = tmp_path_factory.mktemp("world")
    paths = write_world(generate_world(WorldConfig(contacts=300, days=90, seed=4)), data, fmt="csv")
    contacts = pd.read_csv(paths["contacts"], dtype={"contact_id": str, "account_id": str})
    first = contacts.assign(updated_at="2025-02-01T00:00:00")
    moved = contacts["industry"].isin(["healthcare", "education"])
    second = first.assign(industry=np.where(moved, "software", first["industry"]), updated_at="2025-03-10T00:00:00")
    first.to_csv(data / "contacts_v1.csv", index=False)
    second.to_csv(data / "contacts_v2.csv", index=False)
    ws = tmp_path_factory.mktemp("ws")
    for kind, path in (("events", paths["events"]), ("outcomes", paths["outcomes"]),
                       ("contacts", data / "contacts_v1.csv"), ("contacts", data / "contacts_v2.csv")):
        assert main(["-w", str(ws), "ingest", kind, str(path)]) == 0
    return ws, data, sorted(contacts.loc[moved, "contact_id"])


def _components(report):
    return report.rule.components()


def test_changed_attributes_come_from_the_history_and_equal_the_explicit_snapshot(two_ingests):
    ws, data, moved = two_ingests
    project = Project(ws)
    contact = moved[0]
    recorded = project.explain_change(contact, SINCE, as_of=UNTIL, model=None, rules=SAAS)
    given = project.explain_change(contact, SINCE, as_of=UNTIL, model=None, rules=SAAS,
                                   contacts_before=data / "contacts_v1.csv")
    fit = _components(recorded)["fit"].iloc[0]
    assert fit == pytest.approx(_components(given)["fit"].iloc[0], abs=1e-12)
    assert fit > 0  # industry_target: 10 points more once the contact is in software
    pd.testing.assert_frame_equal(_components(recorded), _components(given))
    split = recorded.rule
    assert abs(split.components().sum(axis=1).iloc[0] - split.change[0]) < 1e-9
    assert any("from the workspace's attribute history" in n for n in recorded.notes)
    assert not any("latest attributes only" in n for n in recorded.notes)

    # before the change was valid (2025-03-10) and after it, the attributes are the same: fit part 0
    later = project.explain_change(contact, "2025-03-12", as_of=UNTIL, model=None, rules=SAAS)
    assert _components(later)["fit"].iloc[0] == 0


def test_a_rules_change_comes_from_the_history_and_equals_rules_before(two_ingests, tmp_path):
    ws, _, moved = two_ingests
    project = Project(ws)
    old_rules = tmp_path / "old.yaml"
    data = yaml.safe_load(SAAS.read_text())
    for rule in (*data["activities"], *data["fit"]):  # the fit points too: every moved contact has them
        rule["points"] = rule["points"] * 0.25  # a quarter: no contact stays at the top of the scale
    old_rules.write_text(yaml.safe_dump(data))
    history = project.ws.layout.history_db
    record_rules(history, load_rules(old_rules), command="score", source=old_rules, at=datetime(2025, 2, 15))
    record_rules(history, load_rules(SAAS), command="serve", source=SAAS, at=datetime(2025, 3, 5))
    contact = moved[1]

    recorded = project.explain_change(contact, SINCE, as_of=UNTIL, model=None, rules=SAAS)
    given = project.explain_change(contact, SINCE, as_of=UNTIL, model=None, rules=SAAS, rules_before=old_rules)
    assert _components(recorded)["rules"].iloc[0] != 0
    pd.testing.assert_frame_equal(_components(recorded), _components(given))
    assert abs(recorded.rule.components().sum(axis=1).iloc[0] - recorded.rule.change[0]) < 1e-9
    assert any("rules at --since: saas" in n and "used by `score` at 2025-02-15" in n for n in recorded.notes)

    same = project.explain_change(contact, "2025-03-06", as_of=UNTIL, model=None, rules=SAAS)
    assert _components(same)["rules"].iloc[0] == 0
    assert any("the same as now" in n for n in same.notes)


def test_the_cli_says_which_state_it_used(two_ingests, capsys):
    ws, _, moved = two_ingests
    assert main(["-w", str(ws), "explain", moved[2], "--since", SINCE, "--as-of", UNTIL, "--rules", str(SAAS)]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "attributes: as they were at 2025-03-01 00:00 from the workspace's attribute history" in said


def test_score_records_the_rules_it_used_once_per_content(tmp_path):
    ws = tmp_path / "ws"
    world = generate_world(WorldConfig(contacts=60, days=40, seed=2))
    paths = write_world(world, tmp_path / "data", fmt="csv")
    for kind in ("events", "contacts"):
        assert main(["-w", str(ws), "ingest", kind, str(paths[kind])]) == 0
    before = datetime.now(UTC).replace(tzinfo=None)
    for _ in range(2):
        assert main(["-w", str(ws), "score", "--as-of", "2025-02-01", "--rules", str(SAAS),
                     "--out", str(tmp_path / "s.csv")]) == 0
    used = rules_at(Project(ws).ws.layout.history_db, datetime.now(UTC).replace(tzinfo=None))
    assert used.command == "score" and used.used_at >= before and used.path == str(SAAS)
    assert used.rules == load_rules(SAAS) and used.hash == rules_hash(load_rules(SAAS))[0]
    import sqlite3

    with sqlite3.connect(Project(ws).ws.layout.history_db) as con:
        assert con.execute("SELECT count(*) FROM definitions_used").fetchone()[0] == 2
        assert con.execute("SELECT count(*) FROM rules_files").fetchone()[0] == 1


def test_the_model_at_a_date_is_the_version_that_last_scored_not_one_only_registered(tmp_path):
    path = tmp_path / "history.db"
    record_model(path, name="m", version="1", ref="champion", uri=None, command="promote", at=datetime(2025, 1, 1))
    record_model(path, name="m", version="2", ref="registered", uri=None, command="register", at=datetime(2025, 2, 1))
    record_model(path, name="m", version="3", ref="champion", uri=None, command="serve", at=datetime(2025, 3, 1))
    record_model(path, name="other", version="9", ref="champion", uri=None, command="score", at=datetime(2025, 2, 2))
    assert model_at(path, "m", datetime(2024, 12, 31)) is None
    assert model_at(path, "m", datetime(2025, 2, 15)).version == "1"
    assert model_at(path, "m", datetime(2025, 3, 1)).version == "3"


@pytest.mark.slow
def test_the_learned_score_at_the_later_date_reads_the_attributes_of_then_as_score_model_does(world, tmp_path):
    """A model that reads attributes as of each cut-off: explain's learned "after" is the score
    `score --model` gives at that date, untouched by an attribute change dated after it."""
    from propensity.features.history import contacts_as_of
    from propensity.features.spine import spine_from_frame
    from propensity.features.store import Workspace, ingest_file
    from propensity.pipelines.explain.change_jobs import explain_change
    from propensity.pipelines.explain.jobs import model_features

    since, until = datetime(2025, 4, 1), datetime(2025, 5, 1)
    scorer, rules = world.result.scorer, load_rules(SAAS)
    assert scorer.feature_config["attributes"]["values"] == "as_of"
    ws = Workspace(tmp_path / "ws")
    for kind in ("events", "contacts"):
        path = tmp_path / f"{kind}.parquet"
        world.ws.table(kind).to_parquet(path, index=False)
        ingest_file(ws, kind, path)
    contacts = world.ws.table("contacts")
    later = contacts.assign(company_size=contacts["company_size"] * 40, industry="software",
                            updated_at=pd.Timestamp("2025-05-15"))  # after the later date
    later.to_parquet(tmp_path / "later.parquet", index=False)
    ingest_file(ws, "contacts", tmp_path / "later.parquet")

    con = ws.ibis_connection()
    ids = sorted(contacts["contact_id"].astype(str))[:40]
    before, at_until = contacts_as_of(con, since).frame, contacts_as_of(con, until).frame
    report = explain_change(ws, ids, since, until, rules=rules, scorer=scorer, contacts_before=before,
                            contacts_until=at_until)
    spine = spine_from_frame(con, pd.DataFrame({"contact_id": ids, "as_of": [pd.Timestamp(until)] * len(ids)}))
    features = model_features(con, spine, scorer).set_index("contact_id").loc[ids].reset_index()
    np.testing.assert_allclose(report.learned.after, scorer.score(features)["learned_score"].to_numpy(), atol=1e-9)
    assert (report.learned.components()["fit"] == 0).all()  # nothing changed between the two dates
    assert report.learned.residual() < 1e-9
    # read with today's contacts instead, the change dated after the later date would show as fit
    today = explain_change(ws, ids, since, until, rules=rules, scorer=scorer, contacts_before=before)
    assert today.learned.components()["fit"].abs().max() > 0
