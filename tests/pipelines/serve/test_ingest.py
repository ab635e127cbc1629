"""A Segment call sent to the service lands exactly as the same call read from an export file."""

import hashlib
import json
from datetime import datetime

import pandas as pd
import pytest

from propensity.features.sources import read_segment
from propensity.features.validate import validate
from propensity.pipelines.serve.ingest import ContactUpdate, EventRow, PayloadError, parse_call, parse_payload

NOW = datetime(2026, 3, 1, 12, 0, 0)

TRACKS = [
    {"type": "track", "userId": "u1", "event": "page_view", "messageId": "m1",
     "timestamp": "2026-02-01T10:00:00.123Z", "properties": {"path": "/pricing"}},
    {"type": "track", "userId": " u2 ", "event": " signup ", "messageId": "m2",
     "timestamp": "2026-02-01T10:00:00+02:00", "context": {"groupId": "acme"}},
    {"type": "track", "anonymousId": "anon-1", "event": "purchase", "messageId": "m3",
     "timestamp": "2026-02-01", "properties": {"revenue": 12.5, "sku": "x"}},
    {"type": "track", "userId": 42, "event": "purchase", "messageId": "m4",
     "timestamp": 1767225600, "properties": {"value": "7.25"}},
    {"type": "track", "userId": "u5", "event": "e", "messageId": "m5", "timestamp": 1767225600123},
    {"type": "track", "userId": "u6", "event": "e", "messageId": "m6",
     "timestamp": "2026-01-05 08:30:00", "groupId": "g1", "properties": {"amount": 3}},
    {"type": "track", "userId": "u7", "event": "e", "timestamp": "2026-01-05T08:30:00Z",
     "properties": {"value": 2.5, "k": [1, 2]}},  # no messageId: the row hash, as in batch
    {"type": "track", "userId": "u7b", "event": "e", "messageId": "m7b",
     "timestamp": "2026-01-05T08:30:00Z", "properties": {}},
    # rejected by both
    {"type": "track", "userId": "null", "event": "e", "messageId": "r1", "timestamp": "2026-01-05"},
    {"type": "track", "userId": "u8", "event": "", "messageId": "r2", "timestamp": "2026-01-05"},
    {"type": "track", "userId": "u9", "event": "e", "messageId": "r3", "timestamp": "not a time"},
    {"type": "track", "userId": "u10", "event": "e", "messageId": "r4", "timestamp": "1969-12-31T00:00:00Z"},
    {"type": "track", "userId": "u11", "event": "e", "messageId": "r5", "timestamp": "2026-03-03T00:00:00Z"},
    {"type": "track", "userId": "u12", "event": "e", "messageId": "r6", "timestamp": "2026-01-05",
     "properties": {"value": "a lot"}},
    {"type": "track", "userId": "nan", "event": "e", "messageId": "r7", "timestamp": "2026-01-05"},
]


def _batch_path(tmp_path, calls):
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(json.dumps(c) for c in calls) + "\n")
    frames = read_segment(path)
    return validate(frames["events"], "events", path.name, now=NOW)


def test_track_calls_become_the_same_rows_as_batch_ingestion(tmp_path):
    batch = _batch_path(tmp_path, TRACKS)
    good = batch.good.set_index("event_id")
    rejected_lines = set(batch.rejects["row_number"])
    accepted = 0
    for line, call in enumerate(TRACKS, start=1):
        try:
            row = parse_call(call, where="track", received_at=NOW, now=NOW)
        except PayloadError:
            assert line in rejected_lines, f"the service refused a call batch ingestion accepts: {call}"
            continue
        assert line not in rejected_lines, f"the service accepted a call batch ingestion rejects: {call}"
        assert isinstance(row, EventRow)
        expected = good.loc[row.event_id]
        assert row.contact_id == expected["contact_id"]
        assert row.event_type == expected["event_type"]
        assert pd.Timestamp(row.ts) == expected["ts"], call
        assert row.value == expected["value"]
        assert row.account_id == (None if pd.isna(expected["account_id"]) else expected["account_id"])
        assert row.properties == (None if pd.isna(expected["properties"]) else expected["properties"])
        accepted += 1
    assert accepted == len(good) == 8


def test_a_call_without_message_id_gets_the_batch_row_hash():
    row = parse_call(TRACKS[6], where="track", received_at=NOW, now=NOW)
    # properties as canonical JSON (sorted keys): the same event with its keys in another order
    parts = ["u7", "e", "2026-01-05T08:30:00.000000", "2.5", json.dumps(TRACKS[6]["properties"], sort_keys=True)]
    assert row.event_id == hashlib.md5("|".join(parts).encode()).hexdigest()


def test_errors_name_the_call_and_the_field():
    with pytest.raises(PayloadError, match=r"batch\[1\], field 'timestamp': cannot parse 'not a time'"):
        parse_payload({"batch": [TRACKS[0], TRACKS[10]]}, "batch", received_at=NOW, now=NOW)
    with pytest.raises(PayloadError, match=r"track, field 'properties.value': cannot parse 'a lot' as a number"):
        parse_payload(TRACKS[13], "track", received_at=NOW, now=NOW)
    with pytest.raises(PayloadError, match="body: expected a JSON object"):
        parse_payload([TRACKS[0]], "track", received_at=NOW, now=NOW)


def test_identify_page_and_a_missing_timestamp():
    rows = parse_payload(
        {"batch": [
            {"type": "identify", "userId": "u1", "traits": {"createdAt": "2025-01-02", "company_id": 77,
                                                              "plan": "pro", "contact_id": "x"}},
            {"type": "page", "userId": "u1", "name": "Pricing"},
            {"type": "track", "userId": "u1", "event": "e", "messageId": "t1"},
        ]},
        "batch", received_at=NOW, now=NOW,
    )
    identify, track = rows
    assert identify == ContactUpdate("u1", "77", datetime(2025, 1, 2), {"company_id": 77, "plan": "pro",
                                                                         "trait_contact_id": "x"})
    assert track.ts == NOW  # Segment's rule: no timestamp means the time it was received


@pytest.mark.parametrize(("raw", "expected"), [
    ("20240601", datetime(2024, 6, 1)),  # a compact ISO 8601 date, not 20,240,601 epoch seconds
    (20240601, datetime(2024, 6, 1)),  # the same digits as a number: the same date
    ("1767225600", datetime(2026, 1, 1)),  # ten digits stay epoch seconds
    (1767225600123, datetime(2026, 1, 1, 0, 0, 0, 123000)),
])
def test_a_compact_date_is_a_date_and_epoch_numbers_stay_epochs(raw, expected):
    row = parse_call({"userId": "u1", "event": "e", "timestamp": raw}, where="track", received_at=NOW, now=NOW,
                     kind="track")
    assert row.ts == expected


@pytest.mark.parametrize("raw", [True, False, "20240231"])
def test_a_boolean_or_an_impossible_compact_date_is_no_timestamp(raw):
    with pytest.raises(PayloadError, match="field 'timestamp': cannot parse"):
        parse_call({"userId": "u1", "event": "e", "timestamp": raw}, where="track", received_at=NOW, now=NOW,
                   kind="track")
