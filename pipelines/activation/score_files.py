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
    """``contact_id -> "+0.80 since 2026-11-01: <reason_1>"`` from ``propensity explain --since`` output.

    ``score`` ("rule" or "learned") picks the rows of the score being pushed; a contact whose score
    did not move (no ``reason_1``) gets none.

    Raises
    ------
    ValueError
        Naming ``source`` and the missing column.
    """
    missing = [c for c in ("contact_id", "score", "since", "change", "reason_1") if c not in changes.columns]
    if missing:
        raise ValueError(f"{source}: not `propensity explain --since` output: no column(s) {', '.join(missing)}")
    rows = changes[(changes["score"] == score) & changes["reason_1"].notna()]
    since = pd.to_datetime(rows["since"])
    return {str(c): f"{float(d):+.2f} since {t:%Y-%m-%d}: {r}"
            for c, d, t, r in zip(rows["contact_id"], rows["change"], since, rows["reason_1"], strict=True)}


def with_change_reasons(contacts: list, reasons: dict[str, str]) -> list:
    """The contacts (:class:`..push.ContactTraits`) with ``change_reason`` among their traits where known."""
    from propensity.pipelines.activation.push import ContactTraits, fingerprint

    out = []
    for c in contacts:
        if c.contact_id in reasons:
            traits = {**c.traits, "change_reason": reasons[c.contact_id]}
            c = ContactTraits(c.contact_id, traits, fingerprint(traits))
        out.append(c)
    return out
