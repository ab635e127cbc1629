"""Writing result frames to files, chosen by extension (the only place outputs touch disk)."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import pandas as pd

__all__ = ["parse_as_of", "write_frame"]


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


def write_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` as Parquet (``.parquet``/``.pq``), CSV (``.csv``) or JSON Lines (``.jsonl``)."""
    path = Path(path)
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
