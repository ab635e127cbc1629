"""Scores to push, read from where ``propensity score`` and the service leave them: a scores file
(.parquet, .csv, .jsonl) or a table of the service database (``score_state``); and, from
``propensity explain --since`` output, the reason for each contact's last change."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import sqlalchemy as sa

__all__ = ["change_reasons", "read_scores", "read_scores_table", "with_change_reasons"]


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
                            "probability", "top_reasons", "last_split"}
              or c.name.startswith(("points__", "reason_"))]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(*wanted)).mappings().all()
    frame = pd.DataFrame(rows, columns=[c.name for c in wanted])
    if "as_of" not in frame and "scored_at" in frame:
        frame = frame.rename(columns={"scored_at": "as_of"})
    return frame


def change_reasons(changes: pd.DataFrame, score: str, *, source: str = "changes") -> dict[str, str]:
    """``contact_id -> "<change_reason_1> (+0.80)"`` from ``propensity explain --since`` output, in the
    words :func:`..push.change_reason_text` gives a scores file's own ``change_reason`` columns.

    ``score`` ("rule" or "learned") picks the rows of the score being pushed; a contact whose score
    did not move (no ``change_reason_1``) gets none.

    Raises
    ------
    ValueError
        Naming ``source`` and the missing column.
    """
    from propensity.pipelines.activation.traits import change_reason_text

    missing = [c for c in ("contact_id", "score", "change_reason_1") if c not in changes.columns]
    if missing:
        raise ValueError(f"{source}: not `propensity explain --since` output: no column(s) {', '.join(missing)}")
    rows = changes[changes["score"] == score].drop(columns=["last_split"], errors="ignore")
    out = {}
    for row in rows.to_dict("records"):
        if (text := change_reason_text(row)) is not None:
            out[str(row["contact_id"])] = text
    return out


def with_change_reasons(contacts: list, reasons: dict[str, str]) -> list:
    """The contacts (:class:`..push.ContactTraits`) with ``score_change_reason`` (the trait a scores
    file's own change columns give) where ``reasons`` has one."""
    from propensity.pipelines.activation.traits import ContactTraits, fingerprint

    out = []
    for c in contacts:
        if c.contact_id in reasons:
            traits = {**c.traits, "score_change_reason": reasons[c.contact_id]}
            c = ContactTraits(c.contact_id, traits, fingerprint(traits))
        out.append(c)
    return out
