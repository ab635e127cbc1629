"""The contacts' attribute history: every version kept, dated, and read back as of a date."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime

from propensity.features.history import HISTORY_TABLE, contacts_as_of
from propensity.features.store import Workspace, ingest_file


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _write(path, text: str):
    path.write_text(text.strip() + "\n")
    return path


def _versions(ws: Workspace):
    with closing(ws.connect()) as con:
        return con.execute(f"SELECT contact_id, valid_from, plan FROM {HISTORY_TABLE} "
                           "ORDER BY contact_id, recorded_at, valid_from NULLS FIRST").fetchall()


def test_each_change_is_a_new_version_and_nothing_earlier_is_lost(tmp_path):
    ws = Workspace(tmp_path / "ws")
    first = _write(tmp_path / "a.csv", "contact_id,plan,country\nc1,free,US\nc2,pro,DE")
    second = _write(tmp_path / "b.csv", "contact_id,plan\nc1,team\nc2,pro")
    ingest_file(ws, "contacts", first)
    before = _now()
    report = ingest_file(ws, "contacts", second)
    assert report.updated == 1
    assert ingest_file(ws, "contacts", second).updated == 0  # the same file again: no version
    versions = _versions(ws)
    assert [(c, p) for c, _, p in versions] == [("c1", "free"), ("c1", "team"), ("c2", "pro")]
    # a contact's first values carry no date (nothing earlier is known); a change is dated by its ingest
    assert versions[0][1] is None and versions[1][1] >= before

    con = ws.ibis_connection()
    earlier = contacts_as_of(con, before).frame.set_index("contact_id")
    later = contacts_as_of(con, _now()).frame.set_index("contact_id")
    assert earlier.loc["c1", "plan"] == "free" and later.loc["c1", "plan"] == "team"
    assert earlier.loc["c1", "country"] == "US" == later.loc["c1", "country"]  # a null erased nothing
    assert list(later.columns) == list(ws.table("contacts").set_index("contact_id").columns)


def test_a_source_updated_at_dates_the_version(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ingest_file(ws, "contacts", _write(tmp_path / "a.csv", "contact_id,plan,updated_at\nc1,free,2025-03-01"))
    ingest_file(ws, "contacts", _write(tmp_path / "b.csv", "contact_id,plan,updated_at\nc1,pro,2025-04-10T12:00:00Z"))
    con = ws.ibis_connection()
    assert contacts_as_of(con, datetime(2025, 4, 10)).frame["plan"].tolist() == ["free"]
    assert contacts_as_of(con, datetime(2025, 4, 11)).frame["plan"].tolist() == ["pro"]
    # before its first dated version nothing is known: the first one is used, and the note says so
    early = contacts_as_of(con, datetime(2025, 1, 1))
    assert early.frame["plan"].tolist() == ["free"] and early.before_first == 1
    assert "1 contacts were first recorded later" in early.note()


def test_a_workspace_from_before_the_history_keeps_its_values_as_the_first_versions(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ingest_file(ws, "contacts", _write(tmp_path / "a.csv", "contact_id,plan\nc1,free\nc2,pro"))
    with closing(ws.connect()) as con:
        con.execute(f"DROP TABLE {HISTORY_TABLE}")  # as a workspace made before the history was kept
    assert contacts_as_of(ws.ibis_connection(), datetime(2025, 1, 1)) is None
    ingest_file(ws, "contacts", _write(tmp_path / "b.csv", "contact_id,plan,seats\nc1,team,3"))
    assert [(c, p) for c, _, p in _versions(ws)] == [("c1", "free"), ("c1", "team"), ("c2", "pro")]
    frame = contacts_as_of(ws.ibis_connection(), datetime(2025, 1, 1)).frame.set_index("contact_id")
    assert frame.loc["c1", "plan"] == "free" and frame.loc["c2", "plan"] == "pro"
    assert frame["seats"].isna().all()  # a column added later was unknown then


def test_a_bad_updated_at_is_rejected_naming_row_and_field(tmp_path):
    ws = Workspace(tmp_path / "ws")
    report = ingest_file(ws, "contacts", _write(tmp_path / "a.csv", "contact_id,plan,updated_at\nc1,free,yesterday"))
    assert report.rejected == 1
    reject = ws.table("rejects").iloc[0]
    assert reject["field"] == "updated_at" and int(reject["row_number"]) == 1
