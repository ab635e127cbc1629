"""Batch ingest never changes the data silently: row hashes, id normalisation, contact merges.

Issue 12 trap 7 and issue 15 items 7-9: each test here failed on the code before the fix.
"""

import json
from datetime import datetime

import duckdb
import pandas as pd
import pytest

from propensity.features.store import Workspace, ingest_file
from propensity.features.validate import canonical_json, normalize_id, validate
from propensity.pipelines.serve.ingest import parse_call, parse_id

NOW = datetime(2026, 3, 1)


def write(path, text):
    path.write_text(text)
    return path


def jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "ws")


# --------------------------------------------------------------------------- row hashes


def test_the_same_event_with_its_json_keys_in_another_order_loads_once(ws, tmp_path):
    row = {"contact_id": "c1", "event_type": "view", "ts": "2026-01-02T10:00:00Z"}
    first = jsonl(tmp_path / "a.jsonl", [{**row, "properties": {"page": "/pricing", "ref": "ad"}}])
    second = jsonl(tmp_path / "b.jsonl", [{**row, "properties": {"ref": "ad", "page": "/pricing"}}])
    assert ingest_file(ws, "events", first, now=NOW).loaded == 1
    again = ingest_file(ws, "events", second, now=NOW)
    assert (again.loaded, again.duplicates) == (0, 1)
    stored = ws.table("events")
    assert json.loads(stored["properties"].iloc[0]) == {"page": "/pricing", "ref": "ad"}


def test_csv_properties_text_with_other_spacing_and_key_order_hash_the_same(ws, tmp_path):
    a = write(tmp_path / "a.csv", 'contact_id,event_type,ts,properties\nc1,view,2026-01-02,"{""b"": 2, ""a"": [1, {""y"": 1, ""x"": 2}]}"\n')
    b = write(tmp_path / "b.csv", 'contact_id,event_type,ts,properties\nc1,view,2026-01-02,"{""a"":[1,{""x"":2,""y"":1}],""b"":2}"\n')
    ingest_file(ws, "events", a, now=NOW)
    assert ingest_file(ws, "events", b, now=NOW).loaded == 0
    assert len(ws.table("events")) == 1


def test_identical_rows_in_one_file_are_distinct_events_and_a_reingest_adds_nothing(ws, tmp_path):
    purchases = "contact_id,event_type,ts,value\n" + "c1,purchase,2026-01-02,9.5\n" * 3 + "c2,purchase,2026-01-02,9.5\n"
    path = write(tmp_path / "purchases.csv", purchases)
    first = ingest_file(ws, "events", path, now=NOW)
    assert (first.read, first.loaded, first.duplicates, first.identical) == (4, 4, 0, 2)
    assert "2 rows identical to an earlier row of the file (no id) kept as distinct events" in first.counts()
    again = ingest_file(ws, "events", path, now=NOW)
    assert (again.loaded, again.duplicates) == (0, 4)
    # an overlapping export holding the row once adds nothing; one holding it 4 times adds one
    once = write(tmp_path / "once.csv", "contact_id,event_type,ts,value\nc1,purchase,2026-01-02,9.5\n")
    assert ingest_file(ws, "events", once, now=NOW).loaded == 0
    four = write(tmp_path / "four.csv", "contact_id,event_type,ts,value\n" + "c1,purchase,2026-01-02,9.5\n" * 4)
    assert ingest_file(ws, "events", four, now=NOW).loaded == 1
    assert ws.table("events").groupby("contact_id").size().to_dict() == {"c1": 4, "c2": 1}


def test_a_repeated_given_event_id_is_still_a_duplicate(ws, tmp_path):
    path = write(tmp_path / "e.csv", "event_id,contact_id,event_type,ts\ne1,c1,view,2026-01-02\ne1,c1,view,2026-01-02\n")
    report = ingest_file(ws, "events", path, now=NOW)
    assert (report.loaded, report.duplicates, report.identical) == (1, 1, 0)


def test_a_track_call_gets_the_id_of_the_same_row_in_a_file_whatever_the_key_order(tmp_path):
    call = {"type": "track", "userId": "u1", "event": "buy", "timestamp": "2026-01-02T10:00:00Z",
            "properties": {"value": 3, "sku": "x", "meta": {"b": 1, "a": 2}}}
    row = parse_call(call, where="track", received_at=NOW, now=NOW)
    frame = pd.DataFrame({"contact_id": ["u1"], "event_type": ["buy"], "ts": ["2026-01-02T10:00:00Z"],
                          "value": [3.0], "properties": ['{"meta": {"a": 2, "b": 1}, "sku": "x", "value": 3}']})
    batch = validate(frame, "events", "e.csv", now=NOW)
    assert batch.good["event_id"].tolist() == [row.event_id]


@pytest.mark.parametrize(("a", "b"), [
    ('{"b": 1, "a": 2}', '{"a":2,"b":1}'),
    ({"x": [1, {"d": 1.5, "c": None}]}, '{"x": [1, {"c": null, "d": 1.5}]}'),
    ('{"é": "ü"}', {"é": "ü"}),
])
def test_canonical_json_ignores_key_order_and_spacing(a, b):
    assert canonical_json(a) == canonical_json(b)


# --------------------------------------------------------------------------- ids


def test_an_integral_id_is_the_same_contact_in_csv_parquet_and_jsonl(ws, tmp_path):
    write(tmp_path / "c.csv", "contact_id,plan\n11391.0,pro\n11392.50,team\n")
    pd.DataFrame({"contact_id": [11391.0, 123.0], "seats": [3, 4]}).to_parquet(tmp_path / "c.parquet")
    jsonl(tmp_path / "c.jsonl", [{"contact_id": 123.0, "region": "eu"}, {"contact_id": "abc", "region": "us"}])
    for name in ("c.csv", "c.parquet", "c.jsonl"):
        ingest_file(ws, "contacts", tmp_path / name, now=NOW)
    contacts = ws.table("contacts").set_index("contact_id")
    assert sorted(contacts.index) == ["11391", "11392.50", "123", "abc"]  # non-integral stays as written
    assert contacts.loc["11391", "plan"] == "pro" and contacts.loc["11391", "seats"] == 3
    assert contacts.loc["123", "region"] == "eu" and contacts.loc["123", "seats"] == 4


IDS = [11391.0, "11391.0", "11391.", " 11391 ", 11391, "-7.000", 2.5, "2.50", "1e3", "007", "007.0",
       1e20, "NaN", "", "null", float("nan"), "11391.01"]


@pytest.mark.parametrize("raw", IDS, ids=repr)
def test_the_service_and_batch_ingest_normalise_an_id_alike(raw):
    typed = pd.DataFrame({"contact_id": pd.Series([raw], dtype=object if isinstance(raw, str) else None)})
    batch = validate(typed, "contacts", "c", now=NOW).good["contact_id"].tolist()
    expected = normalize_id(raw)
    assert batch == ([] if expected is None else [expected])
    assert parse_id(raw) == expected


def test_integral_text_ids_lose_the_fraction():
    assert [normalize_id(x) for x in ("11391.0", "11391.", "-7.000", "11391.01", "1e3")] == [
        "11391", "11391", "-7", "11391.01", "1e3"]


# --------------------------------------------------------------------------- contacts


def test_a_repeated_contact_in_one_file_merges_like_the_same_rows_in_two_files(ws, tmp_path):
    rows = ["contact_id,plan,city,seats", "a,pro,,3", "b,free,Oslo,", "a,,Paris,"]
    one = write(tmp_path / "one.csv", "\n".join(rows) + "\n")
    report = ingest_file(ws, "contacts", one, now=NOW)
    assert (report.loaded, report.duplicates, report.merged) == (2, 1, 1)
    assert "1 repeated rows of a contact merged column by column" in report.counts()
    within = ws.table("contacts").set_index("contact_id").sort_index()

    other = Workspace(tmp_path / "other")
    ingest_file(other, "contacts", write(tmp_path / "p1.csv", "\n".join(rows[:3]) + "\n"), now=NOW)
    ingest_file(other, "contacts", write(tmp_path / "p2.csv", "\n".join([rows[0], rows[3]]) + "\n"), now=NOW)
    across = other.table("contacts").set_index("contact_id").sort_index()[within.columns]
    # (the types may differ: a file whose seats are all blank leaves them text)
    pd.testing.assert_frame_equal(within.astype(str), across.astype(str))
    assert within.loc["a", "plan"] == "pro" and within.loc["a", "city"] == "Paris"


def test_ingest_contacts_prints_how_many_were_updated(tmp_path, capsys):
    from propensity.pipelines.cli import main

    ws = tmp_path / "ws"
    first = write(tmp_path / "c1.csv", "contact_id,plan\na,free\nb,free\n")
    second = write(tmp_path / "c2.csv", "contact_id,plan\na,pro\nb,free\nc,team\n")
    assert main(["-w", str(ws), "ingest", "contacts", str(first)]) == 0
    assert main(["-w", str(ws), "ingest", "contacts", str(second)]) == 0
    out = capsys.readouterr().out.splitlines()[-1]
    assert "loaded 1, updated 1, duplicates 1" in out


def test_duckdb_reads_the_canonical_function_back_on_a_fresh_connection():
    # stage_rows registers canonical_json on the connection it is given; a second staging on the
    # same connection must not fail because it is already there
    con = duckdb.connect()
    frame = pd.DataFrame({"contact_id": ["a"], "event_type": ["v"], "ts": ["2026-01-01"], "properties": ['{"b":1,"a":2}']})
    from propensity.features.validate import stage_rows

    con.register("f", frame)
    first = stage_rows(con, "f", "events", "f", now=NOW)
    second = stage_rows(con, "f", "events", "f", now=NOW)
    keys = [con.execute(f"SELECT event_id FROM {s.table}").fetchall() for s in (first, second)]
    assert keys[0] == keys[1]


def test_nan_or_infinity_inside_properties_is_rejected_not_stored_as_invalid_json():
    props = ['{"a": NaN}', '{"b": [1, -Infinity]}', '{"a": "NaN", "b": "say \\"Infinity\\""}', '{"nan": 1}']
    frame = pd.DataFrame({"contact_id": list("abcd"), "event_type": ["v"] * 4, "ts": ["2026-01-01"] * 4,
                          "properties": props})
    result = validate(frame, "events", "e.csv", now=NOW)
    assert result.good["contact_id"].tolist() == ["c", "d"]  # NaN as a string or a key is fine
    assert result.rejects["row_number"].tolist() == [1, 2]
    assert result.rejects["reason"].str.endswith("is not valid JSON (NaN and Infinity are no JSON numbers)").all()
    for text in result.good["properties"]:
        json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} stored"))
