"""Scores to push, read from where ``propensity score`` and the service leave them: a scores file
(.parquet, .csv, .jsonl) or a table of the service database (``score_state``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import sqlalchemy as sa

__all__ = ["read_scores", "read_scores_table"]


def read_scores(path: str | Path) -> pd.DataFrame:
    """Read a scores file written by ``propensity score --out`` (.parquet, .csv or .jsonl)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: scores file not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".csv":
        return pd.read_csv(path, dtype={"contact_id": str})
    if suffix in {".jsonl", ".ndjson"}:
        return pd.read_json(path, lines=True, dtype={"contact_id": str})
    raise ValueError(f"{path}: scores must be .parquet, .csv or .jsonl, not {suffix or 'no extension'}")


def read_scores_table(engine: sa.Engine, name: str) -> pd.DataFrame:
    """Read scores from a table of the service database (e.g. the service's ``score_state``).

    Only the columns :func:`traits_from_scores` uses are read; ``scored_at`` counts as ``as_of``.
    """
    try:
        table = sa.Table(name, sa.MetaData(), autoload_with=engine)
    except sa.exc.NoSuchTableError:
        shown = engine.url.render_as_string(hide_password=True)
        raise ValueError(f"--from {name}: no such file, and no table {name!r} in {shown}") from None
    wanted = [c for c in table.columns
              if c.name in {"contact_id", "as_of", "scored_at", "rule_score", "learned_score", "band",
                            "probability", "top_reasons"}
              or c.name.startswith(("points__", "reason_"))]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(*wanted)).mappings().all()
    frame = pd.DataFrame(rows, columns=[c.name for c in wanted])
    if "as_of" not in frame and "scored_at" in frame:
        frame = frame.rename(columns={"scored_at": "as_of"})
    return frame
