"""Scores -> the traits a push sends (pure): ``intent_score``, ``intent_band``, ``propensity``,
``top_reasons``, ``score_change_reason``, and the fingerprint that says whether they changed."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import pandas as pd

__all__ = ["ContactTraits", "change_reason_text", "fingerprint", "message_id", "traits_from_scores"]


# -- scores -> traits (pure) --------------------------------------------------------------------


@dataclass(frozen=True)
class ContactTraits:
    """The traits to send for one contact and a fingerprint of them (what "changed" compares)."""

    contact_id: str
    traits: dict
    fingerprint: str


def traits_from_scores(frame: pd.DataFrame, *, source: str = "scores", top_n: int = 3) -> list[ContactTraits]:
    """One :class:`ContactTraits` per contact, from the latest ``as_of`` row of each.

    ``intent_score`` is ``learned_score`` when present, else ``rule_score`` (both 0-5);
    ``top_reasons`` is a ``top_reasons`` column, else the ``reason_1..n`` columns of
    ``propensity explain`` output, else the names of the ``top_n`` largest positive
    ``points__*`` columns (the rules that contributed most).

    Raises
    ------
    ValueError
        Naming ``source`` and the column or row that is missing or empty.
    """
    if "contact_id" not in frame:
        raise ValueError(f"{source}: no contact_id column (columns: {', '.join(map(str, frame.columns))})")
    score_column = next((c for c in ("learned_score", "rule_score") if c in frame), None)
    if score_column is None:
        raise ValueError(f"{source}: no learned_score or rule_score column "
                         f"(columns: {', '.join(map(str, frame.columns))})")
    empty = frame["contact_id"].isna() | frame[score_column].isna()
    if empty.any():
        row = int(empty.to_numpy().nonzero()[0][0]) + 1  # 1-based data row of the file
        field_name = "contact_id" if frame["contact_id"].isna().iloc[row - 1] else score_column
        raise ValueError(f"{source}: row {row}: {field_name} is empty")
    frame = _latest_per_contact(frame, source)
    points = [c for c in frame.columns if str(c).startswith("points__")]
    out = []
    for row in frame.to_dict("records"):
        traits: dict = {"intent_score": round(float(row[score_column]), 2)}
        if "band" in row and _present(row["band"]):
            traits["intent_band"] = str(row["band"])
        if "probability" in row and _present(row["probability"]):
            traits["propensity"] = round(float(row["probability"]), 4)
        reasons = _reasons(row, points, top_n)
        if reasons is not None:
            traits["top_reasons"] = reasons
        if (change := change_reason_text(row)) is not None:
            traits["score_change_reason"] = change
        out.append(ContactTraits(str(row["contact_id"]), traits, fingerprint(traits)))
    return out


def _latest_per_contact(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    if "as_of" in frame:
        return frame.sort_values("as_of", kind="stable").drop_duplicates("contact_id", keep="last")
    duplicated = frame["contact_id"].duplicated()
    if duplicated.any():
        raise ValueError(f"{source}: contact {frame['contact_id'][duplicated].iloc[0]!r} has several rows and "
                         "there is no as_of column to pick the latest")
    return frame


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _reasons(row: dict, points: list[str], top_n: int) -> list[str] | None:
    if "top_reasons" in row and row["top_reasons"] is not None:
        value = row["top_reasons"]
        if isinstance(value, str):
            value = json.loads(value) if value.startswith("[") else [v.strip() for v in value.split(";") if v.strip()]
        return [str(v) for v in list(value)[:top_n]]
    explained = [row[f"reason_{k}"] for k in range(1, top_n + 1) if f"reason_{k}" in row]
    if explained:
        # `propensity explain` output: reason_k is already in words, strongest first
        return [str(text) for text in explained if _present(text) and str(text).strip()]
    if not points:
        return None
    ranked = sorted(((float(row[c]), c) for c in points if _present(row[c]) and float(row[c]) > 0),
                    key=lambda item: (-item[0], item[1]))
    return [name.removeprefix("points__") for _, name in ranked[:top_n]]


def change_reason_text(row: dict) -> str | None:
    """The top reason for the score's last change: the service's ``last_split`` (JSON), else a
    ``change_reason`` / ``change_reason_1`` column (`propensity explain --since --changed-band`)."""
    split = row.get("last_split")
    if isinstance(split, str) and split:
        top = json.loads(split).get("top_reason")
        return None if top is None else f"{top['reason']} ({top['points']:+.2f})"
    for column in ("change_reason", "change_reason_1"):
        if column in row and _present(row[column]) and str(row[column]).strip():
            points = row.get(f"{column}_points")
            return str(row[column]) + (f" ({float(points):+.2f})" if _present(points) else "")
    return None


def fingerprint(traits: dict) -> str:
    return hashlib.sha256(json.dumps(traits, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def message_id(destination: str, contact: ContactTraits) -> str:
    """Same destination, contact and traits -> same id, so a retried send can be deduplicated."""
    return hashlib.sha256(f"{destination}\x1f{contact.contact_id}\x1f{contact.fingerprint}".encode()).hexdigest()[:32]
