"""The workspace: loading every format, dedupe on re-ingest, contacts upsert, rejects."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from propensity.features.sources import SourceError
from propensity.features.store import ENV_VAR, IngestReport, Workspace, ingest_file
from propensity.features.validate import DataValidationError, validate

NOW = dt.datetime(2024, 6, 1)

EVENTS_CSV = """contact_id,event_type,ts,value,plan
c1,visit,2024-05-01T10:00:00Z,,pro
c1,visit,2024-05-01T10:00:00Z,,pro
c2,demo,2024-05-02T09:00:00+02:00,2.5,
,visit,2024-05-03,,
c3,visit,yesterday,,
"""


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def balanced(report: IngestReport) -> bool:
    return report.read == report.loaded + report.updated + report.duplicates + report.rejected


# --------------------------------------------------------------------------- workspace


def test_from_env_prefers_argument_then_env_then_default(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from-env"))
    assert Workspace.from_env(tmp_path / "arg").path == tmp_path / "arg"
    assert Workspace.from_env().path == tmp_path / "from-env"
    monkeypatch.delenv(ENV_VAR)
    assert Workspace.from_env().path == Path("propensity-workspace")


def test_workspace_folder_is_created_on_first_write_only(tmp_path):
    ws = Workspace(tmp_path / "lazy")
    assert ws.db_path == tmp_path / "lazy" / "propensity.duckdb"
    assert ws.counts() == {"events": 0, "contacts": 0, "outcomes": 0, "rejects": 0}
    assert ws.table("events").empty
    assert not ws.path.exists()
    ws.connect().close()
    assert ws.db_path.exists()


def test_read_only_connection_needs_an_existing_workspace(ws):
    with pytest.raises(FileNotFoundError):
        ws.connect(read_only=True)


def test_unknown_table_is_a_key_error(ws):
    ws.connect().close()
    with pytest.raises(KeyError, match="nope"):
        ws.table("nope")


def test_ibis_connection_sees_the_canonical_tables(ws, tmp_path):
    ingest_file(ws, "events", write(tmp_path / "events.csv", EVENTS_CSV), now=NOW)
    con = ws.ibis_connection()
    try:
        # not con.list_tables(): ibis 12.0 calls fetch_arrow_table, gone in duckdb 2.0
        for name in ("contacts", "outcomes", "rejects"):
            assert con.table(name).count().execute() >= 0
        assert con.table("events").count().execute() == 3  # the two identical rows are two events
    finally:
        con.disconnect()


def test_ibis_connection_gets_the_settings_of_connect(tmp_path):
    ws = Workspace(tmp_path / "ws", memory_limit="123MB")
    query = "SELECT current_setting('memory_limit'), current_setting('TimeZone')"
    plain = ws.connect()
    try:
        expected = plain.execute(query).fetchall()[0]
    finally:
        plain.close()
    default = duckdb.connect().execute(query).fetchall()[0]
    con = ws.ibis_connection()
    try:
        assert con.con.execute(query).fetchall()[0] == expected
    finally:
        con.disconnect()
    assert expected[0] != default[0] and expected[1] == "UTC"


# --------------------------------------------------------------------------- events


def test_csv_events_load_with_rejects_and_identical_rows_kept_as_two_events(ws, tmp_path):
    report = ingest_file(ws, "events", write(tmp_path / "events.csv", EVENTS_CSV), now=NOW)
    assert (report.read, report.loaded, report.duplicates, report.rejected) == (5, 3, 0, 2)
    assert report.identical == 1
    assert "1 rows identical to an earlier row of the file (no id) kept as distinct events" in str(report)
    assert balanced(report)
    events = ws.table("events").set_index("contact_id")
    assert events.loc["c2", "ts"] == pd.Timestamp("2024-05-02 07:00")
    assert events.loc["c2", "value"] == 2.5
    assert events.loc["c1", "value"].tolist() == [1.0, 1.0]
    assert events.loc["c1", "event_id"].nunique() == 2
    assert json.loads(events.loc["c1", "properties"].iloc[0]) == {"plan": "pro"}  # extra CSV column


def test_reingesting_the_same_file_adds_nothing(ws, tmp_path):
    path = write(tmp_path / "events.csv", EVENTS_CSV)
    ingest_file(ws, "events", path, now=NOW)
    before = ws.counts()
    again = ingest_file(ws, "events", path, now=NOW)
    assert again.loaded == 0
    assert again.duplicates == 3
    assert again.rejected == 2
    assert ws.counts() == before  # rejects are not logged twice either


def test_rejects_go_to_the_table_and_to_a_csv_per_source(ws, tmp_path):
    report = ingest_file(ws, "events", write(tmp_path / "events.csv", EVENTS_CSV), now=NOW)
    table = ws.table("rejects").sort_values("row_number")
    assert table["row_number"].tolist() == [4, 5]
    assert table["reason"].tolist() == [
        "events.csv row 4, field 'contact_id': is empty",
        "events.csv row 5, field 'ts': cannot parse 'yesterday' as a timestamp",
    ]
    assert table["rejected_at"].notna().all()
    assert report.rejects_path == ws.path / "rejects" / "events-events.csv"
    on_disk = pd.read_csv(report.rejects_path)
    assert on_disk["reason"].tolist() == table["reason"].tolist()


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_every_format_loads_the_same_rows(ws, tmp_path, fmt):
    frame = pd.DataFrame(
        {
            "contact_id": ["a", "b", "b", ""],
            "event_type": ["visit", "demo", "demo", "visit"],
            "ts": ["2024-05-01T00:00:00Z", "2024-05-02T00:00Z", "2024-05-02T00:00Z", "2024-05-03"],
            "event_id": ["e1", "e2", "e2", "e4"],
        }
    )
    path = tmp_path / f"events.{fmt}"
    if fmt == "parquet":
        frame.to_parquet(path)
    elif fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    report = ingest_file(ws, "events", path, now=NOW)
    assert (report.loaded, report.duplicates, report.rejected) == (2, 1, 1)
    assert sorted(ws.table("events")["event_id"]) == ["e1", "e2"]
    reasons = ws.table("rejects")["reason"].tolist()
    assert reasons == [f"events.{fmt} row 4, field 'contact_id': is empty"]
    assert ingest_file(ws, "events", path, now=NOW).loaded == 0


def test_parquet_with_typed_columns(ws, tmp_path):
    path = tmp_path / "events.parquet"
    pd.DataFrame(
        {
            "user_id": [101, 102],
            "event_type": ["visit", "visit"],
            "timestamp": pd.to_datetime(["2024-05-01T10:00+02:00", "2024-05-02T10:00Z"], utc=True),
            "value": [1.5, float("inf")],
        }
    ).to_parquet(path)
    mapping = {"contact_id": "user_id", "ts": "timestamp"}
    report = ingest_file(ws, "events", path, column_map=mapping, now=NOW)
    assert (report.loaded, report.rejected) == (1, 1)
    row = ws.table("events").iloc[0]
    assert (row["contact_id"], row["ts"]) == ("101", pd.Timestamp("2024-05-01 08:00"))
    assert "field 'value': 'inf' is not a finite number" in ws.table("rejects")["reason"].iloc[0]


def test_column_map_renames_source_columns(ws, tmp_path):
    path = write(tmp_path / "export.csv", "user_id,action,timestamp\nu1,click,2024-05-01\n")
    mapping = {"contact_id": "user_id", "event_type": "action", "ts": "timestamp"}
    report = ingest_file(ws, "events", path, column_map=mapping, now=NOW)
    assert report.loaded == 1
    assert ws.table("events")[["contact_id", "event_type"]].values.tolist() == [["u1", "click"]]


def test_missing_columns_refuse_the_whole_file(ws, tmp_path):
    path = write(tmp_path / "events.csv", "user,event_type,time\nu1,click,2024-05-01\n")
    expected = (
        r"events\.csv: missing required events column\(s\) 'contact_id', 'ts'; "
        r"found columns: 'user', 'event_type', 'time'"
    )
    with pytest.raises(DataValidationError, match=expected):
        ingest_file(ws, "events", path, now=NOW)
    assert ws.counts()["events"] == 0 and ws.counts()["rejects"] == 0


def test_non_utf8_file_loads_nothing_and_encoding_fixes_it(ws, tmp_path):
    path = tmp_path / "events.csv"
    path.write_bytes("contact_id,event_type,ts\nc1,caf\xe9,2024-05-01\n".encode("latin-1"))
    where = r"events\.csv: not valid utf-8 at byte offset 31 \(line 2\)"  # 25 + len("c1,caf")
    with pytest.raises(SourceError, match=where):
        ingest_file(ws, "events", path, now=NOW)
    assert ws.counts()["events"] == 0
    ingest_file(ws, "events", path, encoding="latin-1", now=NOW)
    assert ws.table("events")["event_type"].tolist() == ["café"]


def test_a_stream_failing_half_way_loads_nothing(ws):
    # (this used a ragged CSV row, which is now one rejected row: a stream that breaks, e.g. a
    # source cut off, is what must still load nothing)
    schema = pa.schema([("contact_id", pa.string()), ("event_type", pa.string()), ("ts", pa.string())])

    def batches():
        yield pa.RecordBatch.from_pydict(
            {"contact_id": [f"c{i}" for i in range(20000)], "event_type": ["visit"] * 20000,
             "ts": ["2024-05-01"] * 20000}, schema=schema)
        raise pa.ArrowInvalid("events.csv: cannot parse the CSV after row 20000: cut off")

    with pytest.raises(SourceError, match="events.csv: cannot parse the CSV after row 20000"):
        ws.ingest_relation("events", pa.RecordBatchReader.from_batches(schema, batches()), "events.csv", now=NOW)
    assert ws.counts()["events"] == 0


def test_a_ragged_csv_row_is_rejected_with_its_row_and_the_others_load(ws, tmp_path):
    rows = "".join(f"c{i},visit,2024-05-01\n" for i in range(20000))
    ragged = "c,visit,2024-05-01,oops\n"
    path = write(tmp_path / "events.csv", "contact_id,event_type,ts\n" + rows + ragged + "d,visit,2024-05-02\n")
    report = ingest_file(ws, "events", path, now=NOW)
    assert (report.read, report.loaded, report.rejected) == (20002, 20001, 1)
    rejects = ws.table("rejects")
    assert rejects[["row_number", "field"]].values.tolist() == [[20001, "(row)"]]
    assert rejects["reason"].iloc[0] == "events.csv row 20001: expected 3 fields, found 4"
    assert json.loads(rejects["raw"].iloc[0]) == {"text": "c,visit,2024-05-01,oops"}
    assert ws.table("events").query("contact_id == 'd'")["ts"].tolist() == [pd.Timestamp("2024-05-02")]


def test_outcomes_dedupe_on_reingest(ws, tmp_path):
    text = "contact_id,ts,outcome\nc1,2024-05-01,won\nc2,2024-05-02,won\n"
    path = write(tmp_path / "won.csv", text)
    assert ingest_file(ws, "outcomes", path, now=NOW).loaded == 2
    assert ingest_file(ws, "outcomes", path, now=NOW).loaded == 0
    assert ws.counts()["outcomes"] == 2


# --------------------------------------------------------------------------- contacts


def test_contacts_upsert_newest_wins_and_new_columns_are_added(ws, tmp_path):
    first = write(tmp_path / "crm.csv", "contact_id,plan,seats\na,free,1\nb,pro,5\n")
    second = write(tmp_path / "crm2.csv", "contact_id,plan,region\na,team,EU\nc,free,US\nb,,\n")
    assert ingest_file(ws, "contacts", first).loaded == 2
    report = ingest_file(ws, "contacts", second)
    assert (report.loaded, report.updated, report.duplicates) == (1, 1, 1)
    assert balanced(report)
    contacts = ws.table("contacts").set_index("contact_id")
    assert contacts.loc["a", "plan"] == "team"  # newest ingest wins
    assert contacts.loc["a", "seats"] == 1  # a column the new file lacks keeps its value
    assert contacts.loc["b", "plan"] == "pro"  # an empty cell does not erase a value
    assert contacts.loc["a", "region"] == "EU"  # new attribute column
    assert pd.isna(contacts.loc["b", "region"])
    assert ws.counts()["contacts"] == 3


def test_contacts_reingest_changes_nothing(ws, tmp_path):
    path = write(tmp_path / "crm.csv", "contact_id,plan\na,free\nb,pro\n")
    ingest_file(ws, "contacts", path)
    report = ingest_file(ws, "contacts", path)
    assert (report.loaded, report.updated, report.duplicates) == (0, 0, 2)


def test_contacts_attribute_type_widens_when_needed(ws, tmp_path):
    ingest_file(ws, "contacts", write(tmp_path / "a.csv", "contact_id,size\na,3\n"))
    ingest_file(ws, "contacts", write(tmp_path / "b.csv", "contact_id,size\nb,large\n"))
    sizes = ws.table("contacts").set_index("contact_id")["size"].to_dict()
    assert sizes == {"a": "3", "b": "large"}


# --------------------------------------------------------------------------- Segment and frames


def test_segment_file_loads_tracks_as_events_and_identifies_as_contacts(ws, tmp_path):
    calls = [
        {"type": "track", "userId": "u1", "event": "Signed Up", "timestamp": "2024-05-01T10:00:00Z",
         "messageId": "m1", "properties": {"amount": 30}, "context": {"groupId": "acme"}},
        {"type": "track", "userId": "u1", "event": "Signed Up", "timestamp": "2024-05-01T10:00:00Z",
         "messageId": "m1", "properties": {"amount": 30}},
        {"type": "identify", "userId": "u1", "traits": {"plan": "pro", "company_id": "acme"}},
    ]  # fmt: skip
    path = write(tmp_path / "segment.jsonl", "".join(json.dumps(c) + "\n" for c in calls))
    events = ingest_file(ws, "events", path, now=NOW)
    contacts = ingest_file(ws, "contacts", path, now=NOW)
    assert (events.loaded, events.duplicates, contacts.loaded) == (1, 1, 1)
    event = ws.table("events").iloc[0]
    assert (event["event_id"], event["event_type"], event["value"], event["account_id"]) == (
        "m1", "Signed Up", 30.0, "acme",
    )  # fmt: skip
    contact = ws.table("contacts").iloc[0]
    assert (contact["contact_id"], contact["account_id"], contact["plan"]) == ("u1", "acme", "pro")


def test_ingest_of_a_validation_result(ws):
    frame = pd.DataFrame(
        {"contact_id": ["a", "b"], "event_type": ["x", "x"], "ts": ["2024-05-01", "bad"]}
    )
    result = validate(frame, "events", "frame", now=NOW)
    report = ws.ingest("events", result)
    assert (report.loaded, report.rejected) == (1, 1)
    assert ws.ingest("events", result).loaded == 0
    with pytest.raises(ValueError, match="cannot ingest it as contacts"):
        ws.ingest("contacts", result)


def test_sql_path_and_pandas_path_reject_the_same_rows(ws, tmp_path):
    path = write(tmp_path / "events.csv", EVENTS_CSV)
    ingest_file(ws, "events", path, now=NOW)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    in_pandas = validate(frame, "events", "events.csv", fold_extras=True, now=NOW)
    stored_rejects = ws.table("rejects").sort_values("row_number")["reason"].tolist()
    assert in_pandas.rejects["reason"].tolist() == stored_rejects
    stored = ws.table("events").sort_values("event_id").reset_index(drop=True)
    assert in_pandas.good.sort_values("event_id").reset_index(drop=True).equals(stored)


# --------------------------------------------------------------------------- scale


@pytest.mark.slow
def test_a_million_parquet_events_ingest_completely(tmp_path):
    # correctness at a size where DuckDB reads the file in several row groups and threads; the
    # time of 10M events is benchmarks/ingest_bench.py's, not a test's (no timed assertions here)
    path = tmp_path / "events.parquet"
    duckdb.execute(
        "COPY (SELECT 'c' || (i % 50000) AS contact_id, 'type_' || (i % 12) AS event_type, "
        "TIMESTAMP '2024-01-01' + to_microseconds(i * 30000000) AS ts, (i % 7)::DOUBLE AS value "
        f"FROM range(1000000) t(i)) TO '{path}' (FORMAT parquet, ROW_GROUP_SIZE 100000)"
    )
    ws = Workspace(tmp_path / "ws")
    report = ingest_file(ws, "events", path, now="2026-01-01")
    assert (report.loaded, report.rejected) == (1_000_000, 0)
    loaded = ws.connect().execute(
        "SELECT count(DISTINCT contact_id), count(DISTINCT event_id), sum(value) FROM events").fetchone()
    assert loaded == (50_000, 1_000_000, sum(i % 7 for i in range(1_000_000)))
