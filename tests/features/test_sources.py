"""Reading raw files: formats, row numbers, encodings, Segment calls."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from propensity.features.schema import ROW_NUMBER
from propensity.features.sources import (
    SourceError,
    check_encoding,
    detect_format,
    open_csv,
    parquet_relation,
    read_frame,
    read_segment,
)
from propensity.features.validate import DataValidationError


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


SEGMENT = [
    {
        "type": "track",
        "userId": "u1",
        "event": "Order Completed",
        "timestamp": "2024-03-01T10:00:00+01:00",
        "messageId": "m1",
        "properties": {"revenue": 99.5, "plan": "pro"},
        "context": {"groupId": "acme"},
    },
    {
        "type": "track",
        "anonymousId": "anon-7",
        "event": "Page Viewed",
        "timestamp": "2024-03-01T11:00:00Z",
        "messageId": "m2",
        "properties": {"path": "/pricing"},
        "groupId": "globex",
    },
    {"type": "identify", "userId": "u1", "traits": {"plan": "free", "company_id": "acme"}},
    {"type": "page", "userId": "u1", "name": "Home"},
    {
        "type": "identify",
        "userId": "u1",
        "traits": {"plan": "pro", "seats": 5, "createdAt": "2024-01-02T00:00:00Z"},
    },
    {"type": "identify", "anonymousId": "anon-7", "traits": {"email": "a@b.c"}},
]


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("e.csv", "csv"),
        ("e.CSV", "csv"),
        ("e.parquet", "parquet"),
        ("e.pq", "parquet"),
        ("e.jsonl", "jsonl"),
        ("e.ndjson", "jsonl"),
        ("e.json", "jsonl"),
    ],
)
def test_detect_format_from_extension(tmp_path, name, expected):
    path = tmp_path / name
    path.write_text("", encoding="utf-8")
    assert detect_format(path) == expected


def test_detect_format_override_wins_over_extension(tmp_path):
    assert detect_format(tmp_path / "export.txt", "csv") == "csv"


def test_detect_format_unknown_extension_names_the_file(tmp_path):
    with pytest.raises(SourceError, match=r"export\.txt.*fmt="):
        detect_format(tmp_path / "export.txt")


def test_detect_format_unknown_override_is_refused(tmp_path):
    with pytest.raises(SourceError, match="unknown format 'xml'"):
        detect_format(tmp_path / "e.csv", "xml")


def test_segment_jsonl_is_detected_from_its_rows(tmp_path):
    path = write_jsonl(tmp_path / "segment.jsonl", SEGMENT)
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"contact_id": "a", "type": "x"}])
    assert detect_format(path) == "segment"
    assert detect_format(plain) == "jsonl"


# --------------------------------------------------------------------------- CSV


def test_csv_is_read_as_text_with_data_row_numbers(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(
        'contact_id,event_type,ts,note\n007,a,2024-01-01,"two\nlines"\n008,b,2024-01-02,\n',
        encoding="utf-8",
    )
    frame = read_frame(path, "events")
    assert frame["contact_id"].tolist() == ["007", "008"]
    assert frame["note"].tolist()[0] == "two\nlines"
    assert pd.isna(frame["note"].tolist()[1])
    assert frame[ROW_NUMBER].tolist() == [1, 2]


def test_open_csv_streams_batches_with_row_numbers(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("a,b\n" + "".join(f"{i},x{i}\n" for i in range(5000)), encoding="utf-8")
    table = open_csv(path).read_all()
    assert table.num_rows == 5000
    assert table.column(ROW_NUMBER).to_pylist()[:3] == [1, 2, 3]
    assert table.column("a").type == "string"


def test_non_utf8_csv_error_names_file_byte_offset_and_line(tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_bytes("contact_id,city\n1,Paris\n2,Montr\xe9al\n".encode("latin-1"))
    with pytest.raises(SourceError) as err:
        read_frame(path, "contacts")
    message = str(err.value)
    assert "contacts.csv" in message
    assert "byte offset 31" in message  # 0-based: 16 + 8 + len("2,Montr")
    assert "line 3" in message
    assert "encoding=" in message
    assert isinstance(err.value, DataValidationError)


def test_encoding_parameter_reads_latin1(tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_bytes("contact_id,city\n2,Montr\xe9al\n".encode("latin-1"))
    check_encoding(path, "latin-1")
    assert read_frame(path, "contacts", encoding="latin-1")["city"].tolist() == ["Montréal"]


def test_unknown_encoding_is_a_clear_error(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("a\n1\n", encoding="utf-8")
    with pytest.raises(SourceError, match="unknown encoding 'klingon'"):
        check_encoding(path, "klingon")


def test_a_ragged_csv_row_comes_out_numbered_with_its_reason(tmp_path):
    # (it used to stop the file; validation now rejects it like any other bad row)
    path = tmp_path / "events.csv"
    path.write_text('contact_id,event_type,ts\n1,a,2024-01-01,extra\n"2\nb",b,2024-01-02\n3,c\n4,d,2024-01-04\n',
                    encoding="utf-8")
    table = open_csv(path).read_all().to_pandas().sort_values(ROW_NUMBER)
    assert table[ROW_NUMBER].tolist() == [1, 2, 3, 4]  # records after the header, not lines
    assert table["contact_id"].tolist()[1::2] == ["2\nb", "4"]
    assert table["__source_error"].tolist()[0::2] == ["expected 3 fields, found 4", "expected 3 fields, found 2"]
    assert table["__source_text"].tolist()[0::2] == ["1,a,2024-01-01,extra", "3,c"]


def test_duplicate_csv_headers_are_refused(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("a,a\n1,2\n", encoding="utf-8")
    with pytest.raises(SourceError, match="duplicate column"):
        open_csv(path)


# --------------------------------------------------------------------------- Parquet and JSON


def test_parquet_relation_numbers_rows_from_one(tmp_path):
    path = tmp_path / "events.parquet"
    pd.DataFrame({"contact_id": ["a", "b", "c"]}).to_parquet(path)
    rows = duckdb.sql(f"SELECT contact_id, {ROW_NUMBER} FROM {parquet_relation(path)}").fetchall()
    assert sorted(rows) == [("a", 1), ("b", 2), ("c", 3)]


def test_read_frame_parquet(tmp_path):
    path = tmp_path / "events.parquet"
    pd.DataFrame({"contact_id": ["a", "b"], "value": [1.5, 2.0]}).to_parquet(path)
    frame = read_frame(path, "events")
    assert frame["value"].tolist() == [1.5, 2.0]
    assert frame[ROW_NUMBER].tolist() == [1, 2]


def test_jsonl_rows_are_numbered_by_line_and_blank_lines_skipped(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"contact_id": "a", "properties": {"x": 1}}\n\n{"contact_id": "b"}\n', encoding="utf-8"
    )
    frame = read_frame(path, "events")
    assert frame["contact_id"].tolist() == ["a", "b"]
    assert frame[ROW_NUMBER].tolist() == [1, 3]
    assert frame["properties"].tolist()[0] == {"x": 1}


def test_json_array_file_is_read_too(tmp_path):
    path = tmp_path / "events.json"
    path.write_text('[{"contact_id": "a"}, {"contact_id": "b"}]', encoding="utf-8")
    assert read_frame(path, "events")["contact_id"].tolist() == ["a", "b"]


def test_a_malformed_jsonl_line_becomes_a_row_with_its_line_and_reason(tmp_path):
    # (it used to refuse the whole file; validation now rejects that line like any bad row)
    path = tmp_path / "events.jsonl"
    path.write_text('{"contact_id": "a"}\n{"contact_id": \n', encoding="utf-8")
    frame = read_frame(path, "events")
    assert frame[ROW_NUMBER].tolist() == [1, 2]
    assert frame["__source_error"].tolist()[1].startswith("not valid JSON")
    assert frame["__source_text"].tolist()[1] == '{"contact_id": '


def test_a_file_without_one_json_object_is_refused(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("contact_id,event_type\na,b\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"events\.jsonl: no line is a JSON object \(line 1: not valid JSON"):
        read_frame(path, "events")


# --------------------------------------------------------------------------- Segment


def test_segment_track_calls_become_raw_events(tmp_path):
    path = write_jsonl(tmp_path / "segment.jsonl", SEGMENT)
    events = read_frame(path, "events")
    assert events[ROW_NUMBER].tolist() == [1, 2]
    first, second = events.to_dict("records")
    assert first["contact_id"] == "u1"
    assert first["event_type"] == "Order Completed"
    assert first["event_id"] == "m1"
    assert first["value"] == 99.5  # properties.revenue
    assert first["account_id"] == "acme"  # context.groupId
    assert first["properties"] == {"revenue": 99.5, "plan": "pro"}
    assert second["contact_id"] == "anon-7"  # anonymousId when there is no userId
    assert second["account_id"] == "globex"  # top-level groupId
    assert pd.isna(second["value"])  # -> default 1.0 at validation


def test_segment_identify_calls_merge_traits_per_user(tmp_path):
    path = write_jsonl(tmp_path / "segment.jsonl", SEGMENT)
    contacts = read_segment(path)["contacts"].set_index("contact_id")
    assert sorted(contacts.index) == ["anon-7", "u1"]
    u1 = contacts.loc["u1"]
    assert u1["plan"] == "pro"  # the later call wins
    assert u1["seats"] == 5
    assert u1["account_id"] == "acme"  # kept from the earlier call (traits.company_id)
    assert u1["created_at"] == "2024-01-02T00:00:00Z"
    assert u1[ROW_NUMBER] == 5
    assert contacts.loc["anon-7", "email"] == "a@b.c"


def test_segment_has_no_outcomes(tmp_path):
    path = write_jsonl(tmp_path / "segment.jsonl", SEGMENT)
    with pytest.raises(SourceError, match="no outcomes"):
        read_frame(path, "outcomes")


def test_row_numbers_stay_right_across_blocks_around_ragged_rows(tmp_path, monkeypatch):
    import propensity.features.sources as sources

    monkeypatch.setattr(sources, "_CSV_BLOCK_BYTES", 256)  # many small batches
    bad = {7, 8, 50, 120, 199}
    lines = [f"c{i},v,2024-01-01" + (",x" if i in bad else "") for i in range(1, 201)]
    path = tmp_path / "events.csv"
    path.write_text("contact_id,event_type,ts\n" + "\n".join(lines) + "\n", encoding="utf-8")
    table = open_csv(path).read_all().to_pandas()
    good = table[table["__source_error"].isna()]
    assert (good["contact_id"] == "c" + good[ROW_NUMBER].astype(str)).all()
    assert sorted(good[ROW_NUMBER]) == sorted(set(range(1, 201)) - bad)
    assert sorted(table.loc[table["__source_error"].notna(), ROW_NUMBER]) == sorted(bad)
