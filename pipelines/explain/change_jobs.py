"""Wiring for `propensity explain --since`: the workspace's events -> the path states -> the split.

The path and why its steps come in this order are in :mod:`propensity.pipelines.explain.change`.
Here each state is built from the workspace: the rule states with the rule model's own event
pass (:func:`propensity.pipelines.rules.score.activity_points`) and
:func:`~propensity.pipelines.rules.score.score_frame`, the learned states with the features the
model was trained on (:func:`propensity.pipelines.training.as_trained.features_as_trained`).
No printing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import ibis
import numpy as np
import pandas as pd

from propensity.features.spine import spine_at, spine_from_frame
from propensity.features.store import Workspace
from propensity.pipelines.explain.change import (
    ChangeSplit,
    split_learned_change,
    split_rule_change,
)
from propensity.pipelines.jobs import WorkspaceError, load_contacts, table_names
from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.rules.score import activity_points, score_frame
from propensity.pipelines.training.as_trained import features_as_trained

__all__ = [
    "ChangeReport",
    "explain_change",
    "explain_changed_bands",
    "learned_states",
    "read_contacts_snapshot",
    "rule_states",
]

UNCHANGED_ATTRIBUTES = ("attributes: the workspace keeps each contact's latest attributes only, so they are "
                        "taken as unchanged (fit part 0); pass the contacts as they were at the earlier date "
                        "(--contacts-before FILE) to measure the fit part")


@dataclass(frozen=True)
class ChangeReport:
    """The change of both scores between ``since`` and ``until`` for some contacts."""

    since: datetime
    until: datetime
    rule: ChangeSplit
    learned: ChangeSplit | None
    notes: tuple[str, ...] = ()

    def splits(self) -> list[ChangeSplit]:
        return [s for s in (self.rule, self.learned) if s is not None]

    def summary(self, n_reasons: int = 3) -> pd.DataFrame:
        """One row per contact and score (see :meth:`ChangeSplit.summary`); ``rules`` and ``model``
        are both columns, 0 for the score they do not apply to."""
        frames = [s.summary(n_reasons) for s in self.splits()]
        table = pd.concat(frames, ignore_index=True)
        for column in ("rules", "model"):
            table[column] = table[column].fillna(0.0) if column in table else 0.0
        first = ["contact_id", "score", "since", "until", "before", "after", "change", "band_before",
                 "band_after", "decay_expiry", "new_events", "fit", "rules", "model"]
        return table[first + [c for c in table.columns if c not in first]]

    def parts(self) -> pd.DataFrame:
        return pd.concat([s.parts() for s in self.splits()], ignore_index=True)

    def to_dict(self, contact_id: str) -> dict:
        """One contact's split as plain JSON-ready data (``--json``, the service)."""
        out = {"contact_id": str(contact_id), "since": self.since.isoformat(), "until": self.until.isoformat(),
               "notes": list(self.notes)}
        for split in self.splits():
            hits = np.flatnonzero(split.contact_ids.astype(str) == str(contact_id))
            if not hits.size:
                raise KeyError(f"contact {contact_id!r} is not among the explained contacts")
            out[f"{split.score}_score"] = split_json(split, int(hits[0]))
        return out


def split_json(split: ChangeSplit, row: int) -> dict:
    """One row of a split as JSON: before, after, change, bands, components, parts, top reason."""
    components = split.components().iloc[row]
    return {
        "before": float(split.before[row]), "after": float(split.after[row]),
        "change": float(split.change[row]),
        "band_before": split.band_before[row] if split.band_before else None,
        "band_after": split.band_after[row] if split.band_after else None,
        "components": {k: float(v) for k, v in components.items()},
        "definition": split.definition,
        "parts": [{k: (float(v) if k == "points" else v) for k, v in p.items() if k not in ("contact_id", "score")}
                  for p in split.parts(row).to_dict(orient="records")],
        "top_reason": split.top_reason(row),
        "notes": list(split.notes),
    }


# --------------------------------------------------------------------------- states


def _spine(con, ids: list[str], at: datetime) -> ibis.Table:
    return spine_from_frame(con, pd.DataFrame({"contact_id": ids, "as_of": [pd.Timestamp(at)] * len(ids)}))


def _aligned(frame: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    frame = frame.assign(contact_id=frame["contact_id"].astype(str)).set_index("contact_id")
    return frame.reindex(ids).reset_index()


def rule_states(con, ids: list[str], since: datetime, until: datetime, rules_before: RuleSet,
                rules_after: RuleSet | None, contacts_before: pd.DataFrame | None,
                contacts_after: pd.DataFrame | None) -> list[pd.DataFrame]:
    """The five scored frames ``s0 .. s4`` (rows in the order of ``ids``)."""
    events = con.table("events")
    old = events.filter(events.ts < ibis.literal(pd.Timestamp(since).to_pydatetime()))
    at_since, at_until = _spine(con, ids, since), _spine(con, ids, until)

    def raw(ev, spine, rules):
        return _aligned(activity_points(ev, spine, rules).execute(), ids)

    raw_until = raw(events, at_until, rules_before)
    states = [
        score_frame(raw(events, at_since, rules_before), contacts_before, rules_before),
        score_frame(raw(old, at_until, rules_before), contacts_before, rules_before),
        score_frame(raw_until, contacts_before, rules_before),
        score_frame(raw_until, contacts_after, rules_before),
    ]
    if rules_after is None or rules_after == rules_before:
        states.append(states[3])
    else:
        states.append(score_frame(raw(events, at_until, rules_after), contacts_after, rules_after))
    return states


def _contacts_table(con, frame: pd.DataFrame | None):
    if frame is None:
        return None
    return con.create_table(f"_contacts_{uuid.uuid4().hex[:12]}", frame, temp=True)


def learned_states(con, ids: list[str], since: datetime, until: datetime, scorer_before, scorer_after,
                   contacts_before: pd.DataFrame | None, contacts_after: pd.DataFrame | None,
                   contacts_until: pd.DataFrame | None = None):
    """The feature frames of ``s0 .. s3`` (as ``scorer_before`` was trained) and ``s3`` as
    ``scorer_after`` was trained (None when it is the same model). ``contacts_until``: the contacts
    as they were at ``until`` (a model that reads attributes as of each cut-off), else the current ones."""
    events = con.table("events")
    old = events.filter(events.ts < ibis.literal(pd.Timestamp(since).to_pydatetime()))
    at_since, at_until = _spine(con, ids, since), _spine(con, ids, until)
    before_tbl = _contacts_table(con, contacts_before)
    after_tbl = con.table("contacts") if contacts_after is not None and "contacts" in table_names(con) else None
    if contacts_before is contacts_after:
        before_tbl = after_tbl
    if contacts_until is not None:
        after_tbl = _contacts_table(con, contacts_until)

    def build(ev, spine, scorer, contacts):
        return _aligned(features_as_trained(ev, spine, scorer, contacts).execute(), ids)

    states = [
        build(events, at_since, scorer_before, before_tbl),
        build(old, at_until, scorer_before, before_tbl),
        build(events, at_until, scorer_before, before_tbl),
    ]
    # the same attributes at both dates: s3 is s2 (one feature build fewer)
    states.append(states[2] if before_tbl is after_tbl else build(events, at_until, scorer_before, after_tbl))
    after = None if scorer_after is None else build(events, at_until, scorer_after, after_tbl)
    return states, after


# --------------------------------------------------------------------------- the operations


def read_contacts_snapshot(path: str | Path, like: pd.DataFrame | None) -> pd.DataFrame:
    """The contacts as they were at the earlier date, from a .parquet, .csv or .jsonl file.

    Columns the workspace's contacts table also has are read with its types, so a fit criterion
    compares the same kinds of values at both dates.

    Raises
    ------
    ValueError
        Naming the file, and the row and column of a value that does not fit the column's type.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: contacts file not found")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    elif suffix == ".csv":
        frame = pd.read_csv(path, dtype={"contact_id": str, "account_id": str})
    elif suffix in (".jsonl", ".ndjson"):
        frame = pd.read_json(path, lines=True, dtype={"contact_id": str, "account_id": str})
    else:
        raise ValueError(f"{path}: contacts must be .parquet, .csv or .jsonl, not {suffix or 'no extension'}")
    if "contact_id" not in frame:
        raise ValueError(f"{path}: no contact_id column (columns: {', '.join(map(str, frame.columns))})")
    empty = frame["contact_id"].isna()
    if empty.any():
        raise ValueError(f"{path}: row {int(np.flatnonzero(empty)[0]) + 1}: contact_id is empty")
    frame = frame.assign(contact_id=frame["contact_id"].astype(str))
    if like is None:
        return frame
    for column in frame.columns:
        if column == "contact_id" or column not in like.columns:
            continue
        target = like[column].dtype
        if pd.api.types.is_numeric_dtype(target) and not pd.api.types.is_bool_dtype(target):
            numbers = pd.to_numeric(frame[column], errors="coerce")
            bad = numbers.isna() & frame[column].notna()
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ValueError(f"{path}: row {row + 1}, field {column!r}: {frame[column].iloc[row]!r} is not a number "
                                 f"(the workspace's contacts hold numbers there)")
            frame[column] = numbers.astype(target)
        elif pd.api.types.is_datetime64_any_dtype(target):
            frame[column] = pd.to_datetime(frame[column]).astype(target)
        else:
            frame[column] = frame[column].astype(target)
    return frame


def _model_label(before, after) -> str | None:
    if after is None:
        return None
    return f"{before.name} v{before.version} -> {after.name} v{after.version}"


def explain_change(
    ws: Workspace | ibis.BaseBackend,
    contact_ids: list[str],
    since: datetime,
    until: datetime,
    *,
    rules: RuleSet,
    rules_before: RuleSet | None = None,
    scorer=None,
    scorer_before=None,
    model_label: str | None = None,
    contacts_before: pd.DataFrame | None = None,
    contacts_until: pd.DataFrame | None = None,
    contacts_after: pd.DataFrame | None = None,
) -> ChangeReport:
    """Split the change of both scores between ``since`` and ``until`` for ``contact_ids``.

    ``rules`` / ``scorer``: what scores ``until``; ``rules_before`` / ``scorer_before``: what
    scored ``since`` (default the same: their part is 0). ``scorer`` None: the rule score only.
    ``contacts_before``: the contacts as they were at ``since`` (default the workspace's, said in
    the notes). ``contacts_until``: the contacts at ``until`` for the learned score (a model that reads
    attributes as of each cut-off, as ``score --model`` does); default the workspace's current ones.
    ``contacts_after``: the contacts at ``until`` for the rule score (the attribute history's version
    then, as ``score`` reads them); default the workspace's current ones.
    """
    if not since < until:
        raise ValueError(f"--since ({since:%Y-%m-%d %H:%M}) must be before the later date ({until:%Y-%m-%d %H:%M})")
    con = _connection(ws)
    ids = sorted(dict.fromkeys(str(c) for c in contact_ids))
    current = load_contacts(con)
    rule_until = contacts_after if contacts_after is not None else current
    notes = []
    if contacts_before is None:
        contacts_before = current
        notes.append(UNCHANGED_ATTRIBUTES)
    before_rules = rules_before or rules
    rule = split_rule_change(
        rule_states(con, ids, since, until, before_rules, rules, contacts_before, rule_until),
        before_rules, rules, since=since, until=until, notes=notes)
    learned = None
    if scorer is not None:
        before_model = scorer_before if scorer_before is not None else scorer
        other = None if scorer_before is None or scorer_before is scorer else scorer
        states, after = learned_states(con, ids, since, until, before_model, other, contacts_before, current,
                                       contacts_until)
        learned = split_learned_change(before_model, states, other, after, since=since, until=until,
                                       definition=model_label if other is not None else None, notes=notes)
    return ChangeReport(since=since, until=until, rule=rule, learned=learned, notes=tuple(notes))


def explain_changed_bands(ws: Workspace | ibis.BaseBackend, since: datetime, until: datetime, *, rules: RuleSet,
                          rules_before: RuleSet | None = None, scorer=None, scorer_before=None,
                          model_label: str | None = None, contacts_before: pd.DataFrame | None = None,
                          contacts_until: pd.DataFrame | None = None,
                          contacts_after: pd.DataFrame | None = None) -> ChangeReport:
    """:func:`explain_change` for every contact known at ``until`` whose band (rule or learned) changed."""
    con = _connection(ws)
    contacts = con.table("contacts") if "contacts" in table_names(con) else None
    everyone = sorted(spine_at(con.table("events"), until, contacts).contact_id.execute().astype(str))
    if not everyone:
        raise WorkspaceError(f"no contacts known at {until:%Y-%m-%d}")
    current = load_contacts(con)
    rule_until = contacts_after if contacts_after is not None else current
    before_rules = rules_before or rules
    at_since, at_until = _spine(con, everyone, since), _spine(con, everyone, until)
    events = con.table("events")
    band0 = score_frame(_aligned(activity_points(events, at_since, before_rules).execute(), everyone),
                        contacts_before if contacts_before is not None else current, before_rules)["band"]
    band1 = score_frame(_aligned(activity_points(events, at_until, rules).execute(), everyone),
                        rule_until, rules)["band"]
    changed = band0.astype(str).to_numpy() != band1.astype(str).to_numpy()
    if scorer is not None:
        before_model = scorer_before if scorer_before is not None else scorer
        before_contacts = _contacts_table(con, contacts_before) if contacts_before is not None else contacts
        until_contacts = _contacts_table(con, contacts_until) if contacts_until is not None else contacts
        changed |= (_learned_bands(con, everyone, at_since, before_model, before_contacts)
                    != _learned_bands(con, everyone, at_until, scorer, until_contacts))
    ids = [c for c, moved in zip(everyone, changed) if moved]
    return explain_change(ws, ids, since, until, rules=rules, rules_before=rules_before, scorer=scorer,
                          scorer_before=scorer_before, model_label=model_label, contacts_before=contacts_before,
                          contacts_until=contacts_until, contacts_after=contacts_after)


def _connection(source):
    """The Ibis backend of a :class:`Workspace` (or a backend itself: tests, other engines)."""
    return source.ibis_connection() if isinstance(source, Workspace) else source


def _learned_bands(con, ids: list[str], spine, scorer, contacts) -> np.ndarray:
    from propensity.pipelines.jobs import model_bands
    from propensity.pipelines.rules.score import assign_bands

    features = _aligned(features_as_trained(con.table("events"), spine, scorer, contacts).execute(), ids)
    scores = scorer.score(features)["learned_score"].to_numpy()
    bands = model_bands(scorer)
    if bands is None:  # no bands recorded: a whole-point move counts as a band change
        return np.floor(scores).astype(str)
    return np.asarray(assign_bands(scores, bands)).astype(str)
