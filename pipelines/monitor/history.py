"""The monitor history in the workspace (``Workspace.layout.monitor_history``): read, append, write.

One JSON file. A *series* is one champion version measured with one rules file, one learned-points
file and one set of measurement settings; its key is a digest of those, so a new champion (or
edited rules) starts a new series and the old one is kept for the record. Within a series each
closed cut-off is stored once: a weekly run measures only the cut-offs that closed since.
Alerts are not stored; they are derived from the stored numbers on every run, so a changed
threshold applies at once without measuring anything again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["HISTORY_VERSION", "digest", "latest_series", "read_history", "series_key", "write_history"]

HISTORY_VERSION = 1


def digest(value) -> str:
    """A short stable digest of JSON-able ``value`` (or of a file's bytes, for a Path)."""
    data = value.read_bytes() if isinstance(value, Path) else json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def series_key(identity: Mapping) -> str:
    return digest(dict(identity))


def read_history(path: Path) -> dict:
    """The stored history, or an empty one; a file from another version is an error naming it."""
    if not path.exists():
        return {"version": HISTORY_VERSION, "series": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a monitor history ({exc}); move it away to start a new one") from None
    if not isinstance(data, dict) or data.get("version") != HISTORY_VERSION:
        raise ValueError(f"{path}: monitor history version {data.get('version') if isinstance(data, dict) else '?'}, "
                         f"expected {HISTORY_VERSION}; move it away to start a new one")
    return data


def write_history(path: Path, history: Mapping) -> Path:
    """Write atomically (a temporary file renamed over the old one): a crash leaves the old history."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".history.", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(history, out, indent=1, allow_nan=False)
    os.replace(temporary, path)
    return path


def latest_series(history: Mapping) -> dict | None:
    """The series updated last (what the service's gauges show), or None."""
    series = list(history.get("series", {}).values())
    return max(series, key=lambda s: s.get("updated_at", ""), default=None)
