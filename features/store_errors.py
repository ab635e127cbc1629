"""Why the workspace's DuckDB file cannot be opened or read, said as what to do: another process
holds it (named from /proc), it is not a DuckDB file, or it is cut short."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from propensity.features.layout import DB_FILE

__all__ = ["WorkspaceError", "damaged_store_error", "open_error"]


class WorkspaceError(ValueError):
    """The workspace cannot be used as asked (the message says why and what to do)."""


def _other_process(pid: int) -> str:
    """``PID 123 (propensity train ...)``: the command line when /proc shows it (Linux)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"PID {pid}"
    words = [w.decode(errors="replace") for w in raw.split(b"\0") if w]
    shown = " ".join(Path(words[0]).name if i == 0 else w for i, w in enumerate(words))
    return f"PID {pid} ({shown[:200]})" if shown else f"PID {pid}"


def damaged_store_error(exc: BaseException) -> WorkspaceError | None:
    """A DuckDB read error on a workspace database met half-way through a command (a file cut
    short: DuckDB opens it and fails on the first block that is missing) as a WorkspaceError;
    None for any other error."""
    text = str(exc)
    found = re.search(r'file "([^"]*' + re.escape(DB_FILE) + r')"', text)
    if not isinstance(exc, duckdb.IOException) or found is None:
        return None
    return WorkspaceError(
        f"the workspace database {found.group(1)} is damaged ({text.splitlines()[0]}): move it "
        "aside and ingest your files again, or pass --workspace another folder"
    )


def open_error(db: Path, exc: duckdb.IOException, read_only: bool) -> WorkspaceError:
    """DuckDB's error on opening the workspace database, said in terms of what to do."""
    text = str(exc)
    if "Conflicting lock" in text or "Could not set lock" in text:
        found = re.search(r"PID (\d+)", text)
        who = _other_process(int(found.group(1))) if found else "another process"
        reading = (
            "several commands that only read (score, explain, compare, train, tune, info) can "
            "share a workspace, but not with a command that writes (ingest, features, init, demo)"
        )
        return WorkspaceError(
            f"the workspace database {db} is in use by {who}"
            f"{' (this command only reads, but that one writes)' if read_only else ''}: wait for "
            f"it to finish (or stop it), then run this command again; {reading}"
        )
    if "not a valid DuckDB database" in text:
        return WorkspaceError(
            f"{db} is not a DuckDB database (damaged, cut short, or not written by propensity): "
            "move it aside and ingest your files again, or pass --workspace another folder"
        )
    return damaged_store_error(exc) or WorkspaceError(
        f"cannot open the workspace database {db}: {text}"
    )
