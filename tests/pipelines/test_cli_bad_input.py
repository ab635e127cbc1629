"""Bad input to file ingest and the workspace: each class with its exit code and message.

Issue 15 items 10-11 and issue 12 trap 9. Exit code 2 is a message saying what is wrong and what
to do (never a traceback); 0 means the file loaded, its bad rows rejected with their row number.
"""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from propensity.features.store import DB_FILE, Workspace
from propensity.pipelines.cli import main

EVENTS = "contact_id,event_type,ts\nc1,view,2026-01-02\nc2,view,2026-01-03\n"


def _csv(tmp: Path, name: str = "events.csv", text: str = EVENTS) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def _jsonl(tmp: Path, name: str, records: list) -> Path:
    path = tmp / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def _parquet(tmp: Path, name: str, frame: pd.DataFrame) -> Path:
    path = tmp / name
    frame.to_parquet(path)
    return path


def _cut_parquet(tmp: Path) -> Path:
    whole = _parquet(tmp, "whole.parquet", pd.DataFrame({"contact_id": ["a"] * 50, "event_type": ["v"] * 50,
                                                          "ts": ["2026-01-01"] * 50}))
    raw = whole.read_bytes()
    cut = tmp / "cut.parquet"
    cut.write_bytes(raw[:4] + b"\0" * (len(raw) - 8) + raw[-4:])  # magic bytes right, the rest not
    return cut


SEGMENT = [
    {"type": "track", "event": "Signed Up", "timestamp": "2026-01-02T10:00:00Z"},  # no id: one reject
    {"type": "track", "userId": "u1", "event": "Viewed", "timestamp": "2026-01-02T11:00:00Z"},
    {"type": "identify", "userId": "u1", "traits": {"plan": "pro"}},
]


# name -> (make the file(s) in tmp, argv after `-w WS`, expected rc, text expected in the output)
CASES = {
    "0-byte .parquet": (
        lambda t: [(t / "e.parquet").write_bytes(b""), t / "e.parquet"][1],
        ["ingest", "events", "{file}"], 2, "e.parquet: empty file (0 bytes), not a Parquet file"),
    "CSV named .parquet": (
        lambda t: _csv(t, "e.parquet"),
        ["ingest", "events", "{file}"], 2, "e.parquet: not a Parquet file (a Parquet file starts and ends with "
                                            "'PAR1', this one starts with b'cont'): it looks like CSV text; pass --format csv"),
    "--format parquet on a CSV": (
        lambda t: _csv(t),
        ["ingest", "events", "{file}", "--format", "parquet"], 2, "events.csv: not a Parquet file"),
    "damaged Parquet": (
        _cut_parquet, ["ingest", "events", "{file}"], 2, "cut.parquet: cannot read the Parquet file"),
    "CSV given --format jsonl": (
        lambda t: _csv(t), ["ingest", "events", "{file}", "--format", "jsonl"], 2,
        "events.csv: no line is a JSON object (line 1: not valid JSON"),
    "__row_number column in a CSV": (
        lambda t: _csv(t, text="contact_id,event_type,ts,__row_number\nc1,v,2026-01-02,99\n"),
        ["ingest", "events", "{file}"], 2,
        "events.csv: column(s) '__row_number' have names propensity uses internally"),
    "__row_number column in Parquet": (
        lambda t: _parquet(t, "e.parquet", pd.DataFrame({"contact_id": ["a"], "event_type": ["v"],
                                                         "ts": ["2026-01-02"], "__row_number": [99]})),
        ["ingest", "events", "{file}"], 2, "e.parquet: column(s) '__row_number' have names propensity uses internally"),
    "__row_number key in JSONL": (
        lambda t: _jsonl(t, "e.jsonl", [{"contact_id": "a", "event_type": "v", "ts": "2026-01-02", "__row_number": 9}]),
        ["ingest", "events", "{file}"], 2, "e.jsonl line 1: column(s) '__row_number' have names propensity uses"),
    "__field column (validation's own)": (
        lambda t: _csv(t, text="contact_id,event_type,ts,__field\nc1,v,2026-01-02,x\n"),
        ["ingest", "events", "{file}"], 2, "events.csv: column(s) '__field' have names propensity uses internally"),
    "Segment calls read as plain JSONL": (
        lambda t: _jsonl(t, "calls.jsonl", SEGMENT), ["ingest", "events", "{file}", "--format", "jsonl"], 2,
        "pass --format segment"),
    # the file loads, the bad row goes to the rejects with its row number
    "ragged CSV row": (
        lambda t: _csv(t, text=EVENTS + "c3,view\nc4,view,2026-01-04\n"),
        ["ingest", "events", "{file}"], 0, "read 4, loaded 3, duplicates 0, rejected 1"),
    "unterminated quote in a CSV": (
        lambda t: _csv(t, text=EVENTS + '"c3,view,2026-01-03\nc4,view,2026-01-04\n'),
        ["ingest", "events", "{file}"], 0, "read 3, loaded 2, duplicates 0, rejected 1"),
    "broken JSONL line": (
        lambda t: _jsonl(t, "e.jsonl", [{"contact_id": "a", "event_type": "v", "ts": "2026-01-02"}, '{"contact_id": "b",',
                                         {"contact_id": "c", "event_type": "v", "ts": "2026-01-02"}]),
        ["ingest", "events", "{file}"], 0, "read 3, loaded 2, duplicates 0, rejected 1"),
    "Segment file whose first call lacks an id": (
        lambda t: _jsonl(t, "calls.jsonl", SEGMENT), ["ingest", "events", "{file}"], 0,
        "read 2, loaded 1, duplicates 0, rejected 1"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_its_exit_code_and_message(case, tmp_path, capsys):
    make, argv, rc, expected = CASES[case]
    made = make(tmp_path)
    args = ["-w", str(tmp_path / "ws"), *[a.replace("{file}", str(made)) for a in argv]]
    assert main(args) == rc
    captured = capsys.readouterr()
    shown = " ".join((captured.out + captured.err).split())  # rich wraps long lines
    assert " ".join(expected.split()) in shown
    assert "Traceback" not in shown
    if rc == 2 and argv[0] == "ingest":
        assert Workspace(tmp_path / "ws").counts()["events"] == 0


REJECTED = {
    "ragged CSV row": (3, "events.csv row 3: expected 3 fields, found 2", {"text": "c3,view"}),
    "unterminated quote in a CSV": (3, "events.csv row 3: expected 3 fields, found 1 (an unterminated quote runs "
                                       "to the end of the file)", {"text": '"c3,view,2026-01-03\nc4,view,2026-01-04'}),
    "broken JSONL line": (2, "e.jsonl row 2: not valid JSON (Expecting property name enclosed in double quotes "
                             "at column 20)", {"text": '{"contact_id": "b",'}),
    "Segment file whose first call lacks an id": (1, "calls.jsonl row 1, field 'contact_id': is empty", None),
}


@pytest.mark.parametrize("case", list(REJECTED))
def test_a_bad_row_is_rejected_with_its_row_reason_and_text(case, tmp_path):
    make, argv, _, _ = CASES[case]
    made = make(tmp_path)
    assert main(["-w", str(tmp_path / "ws"), *[a.replace("{file}", str(made)) for a in argv]]) == 0
    row, reason, raw = REJECTED[case]
    rejects = Workspace(tmp_path / "ws").table("rejects")
    assert rejects[["row_number", "reason"]].values.tolist() == [[row, reason]]
    if raw is not None:
        assert json.loads(rejects["raw"].iloc[0]) == raw


# --------------------------------------------------------------------------- the workspace


def test_a_workspace_path_that_is_a_file(tmp_path, capsys):
    (tmp_path / "ws").write_text("not a folder")
    for argv in (["ingest", "events", str(_csv(tmp_path))], ["info"]):
        assert main(["-w", str(tmp_path / "ws"), *argv]) == 2
        assert f"the workspace {tmp_path / 'ws'} is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"garbage " * 100], ids=["empty", "garbage"])
def test_a_damaged_workspace_database(tmp_path, capsys, content):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / DB_FILE).write_bytes(content)
    for argv in (["ingest", "events", str(_csv(tmp_path))], ["info"]):
        assert main(["-w", str(tmp_path / "ws"), *argv]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"{DB_FILE} is not a DuckDB database" in err and "move it aside" in err


HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "ro")
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding the workspace database: ``holder("rw")`` or ``holder("ro")``."""
    ws = tmp_path / "ws"
    assert main(["-w", str(ws), "ingest", "events", str(_csv(tmp_path))]) == 0
    started = []

    def start(mode: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(ws / DB_FILE), mode], stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout.readline().strip() == "ready"
        return proc

    yield ws, start
    for proc in started:
        proc.kill()
        proc.wait()


def test_a_second_command_on_a_busy_workspace_names_the_other_process(holder, tmp_path, capsys):
    ws, start = holder
    other = start("rw")
    capsys.readouterr()
    for argv in (["ingest", "events", str(_csv(tmp_path, "more.csv"))], ["info"]):
        assert main(["-w", str(ws), *argv]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"is in use by PID {other.pid} (python" in err
        assert "wait for it to finish (or stop it), then run this command again" in err
        assert "Traceback" not in err


def test_commands_that_only_read_run_beside_another_reader_but_a_writer_is_told(holder, tmp_path, capsys):
    ws, start = holder
    other = start("ro")
    assert main(["-w", str(ws), "info"]) == 0  # read-only: shares the file with the other reader
    assert "events: 2" in capsys.readouterr().out
    assert main(["-w", str(ws), "ingest", "events", str(_csv(tmp_path, "more.csv"))]) == 2
    assert f"is in use by PID {other.pid}" in " ".join(capsys.readouterr().err.split())


def test_a_workspace_database_cut_short_is_a_message_where_duckdb_first_misses_a_block(tmp_path, capsys):
    # DuckDB opens a file cut in half (its header and catalog are whole) and fails on the first
    # missing block, half-way through a command: that error too says what to do
    ws = Workspace(tmp_path / "ws")
    n = 200_000
    frame = pd.DataFrame({"contact_id": [f"c{i % 5000}" for i in range(n)], "event_type": ["view"] * n,
                          "ts": pd.date_range("2025-01-01", periods=n, freq="min").astype(str)})
    ws.ingest_relation("events", frame, "e.csv", now="2026-01-01")
    raw = ws.db_path.read_bytes()
    ws.db_path.write_bytes(raw[: len(raw) // 2])
    for argv in (["ingest", "events", str(_csv(tmp_path))], ["score", "--as-of", "2025-06-01"]):
        assert main(["-w", str(ws.path), *argv]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"the workspace database {ws.db_path} is damaged" in err and "move it aside" in err
