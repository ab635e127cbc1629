"""Writing result frames to files, chosen by extension (the only place outputs touch disk)."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import pandas as pd

__all__ = ["STDOUT", "check_output_path", "parse_as_of", "write_frame"]

# `--out -`: CSV on standard output (tables and notes then go to stderr)
STDOUT = "-"
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def parse_as_of(text: str | date | datetime) -> datetime:
    """A cut-off as a naive UTC datetime: a date means midnight UTC; offsets are converted.

    Raises
    ------
    ValueError
        When the text is not an ISO 8601 date or datetime.
    """
    if isinstance(text, datetime):
        moment = text
    elif isinstance(text, date):
        moment = datetime(text.year, text.month, text.day)
    else:
        try:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"--as-of {text!r} is not an ISO 8601 date or datetime (e.g. 2025-06-01)"
            ) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def check_output_path(path: str | Path | None) -> None:
    """Refuse an output whose format is unknown before any work is done (``-`` is stdout)."""
    if path is None or str(path) == STDOUT:
        return
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unknown output format {suffix!r}; use .parquet, .csv, .jsonl or - (CSV on stdout)")


def write_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` as Parquet (``.parquet``/``.pq``), CSV (``.csv``) or JSON Lines (``.jsonl``);
    ``-`` streams CSV to standard output."""
    if str(path) == STDOUT:
        import sys

        frame.to_csv(sys.stdout, index=False)
        return Path(STDOUT)
    path = Path(path)
    check_output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        frame.to_parquet(path, index=False)
    elif suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix in {".jsonl", ".ndjson"}:
        frame.to_json(path, orient="records", lines=True, date_format="iso")
    else:
        raise ValueError(f"{path}: unknown output format {suffix!r}; use .parquet, .csv or .jsonl")
    return path
