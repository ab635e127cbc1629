"""Wiring for `propensity explain`: workspace + registered model -> explanations. No printing."""

from __future__ import annotations

import time
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from propensity.features.history import history_table
from propensity.features.spine import spine_from_frame
from propensity.features.store import Workspace
from propensity.pipelines.explain.explain import (
    ScoreExplanation,
    contact_table,
    explain_contacts,
    top_reasons,
)
from propensity.pipelines.explain.rules import compare_with_rules, rule_breakdown
from propensity.pipelines.jobs import (
    SpineChoice,
    WorkspaceError,
    load_contacts,
    resolve_spine,
    table_names,
)
from propensity.pipelines.rules.attributes_at import rule_contacts
from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.rules.score import score_contacts
from propensity.pipelines.training.as_trained_sql import features_frame_as_trained

__all__ = [
    "BatchReport",
    "ContactReport",
    "check_contact",
    "default_as_of",
    "explain_all",
    "explain_one",
    "model_features",
]

def default_as_of(ws: Workspace) -> datetime:
    """Where the events end, by training's ``data_end`` rule (the midnight after the latest event,
    or the minute after it when that day was cut short), so every event counts (ts < as_of)."""
    from propensity.pipelines.training.data_end import (
        default_data_end,
        events_after_time_of_day,
    )

    events = ws.ibis_connection().table("events")
    span = events.aggregate(latest=events.ts.max(), start=events.ts.min()).execute().iloc[0]
    if span["latest"] is None or pd.isna(span["latest"]):
        raise WorkspaceError("the workspace has no events yet: run `propensity ingest events FILE` first")
    latest = pd.Timestamp(span["latest"]).to_pydatetime()
    return default_data_end(latest, events_after_time_of_day(events, latest, span["start"]))


def model_features(con, spine, scorer, *, query_cache: Path | None = None) -> pd.DataFrame:
    """Features for ``spine`` built exactly as the model was trained (its config and event types).

    ``con`` must be the backend ``spine`` lives on (a spine from a frame is a temporary table).
    ``query_cache``: a folder where the compiled feature query is kept (the workspace's
    ``layout.query_cache``; training/as_trained_sql.py), which saves a cold process the ~1 s
    Ibis takes to build and compile it.
    """
    contacts = con.table("contacts") if "contacts" in table_names(con) else None
    if contacts is not None and not int(contacts.count().execute()):
        contacts = None
    history = None if contacts is None else history_table(con)  # attributes as of each row's as_of
    frame = features_frame_as_trained(con.table("events"), spine, scorer, contacts, history, folder=query_cache)
    return frame.sort_values(["contact_id", "as_of"], kind="stable").reset_index(drop=True)


def check_contact(ws: Workspace, contact_id: str) -> None:
    """Fail early, with the id in the message, for a contact the workspace does not know."""
    with closing(ws.connect()) as con:  # two lookups through DuckDB (see default_as_of)
        tables = {r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()}
        known = con.execute("SELECT EXISTS (SELECT 1 FROM events WHERE contact_id = ?)",
                            [str(contact_id)]).fetchone()[0]
        if not known and "contacts" in tables:
            known = con.execute("SELECT EXISTS (SELECT 1 FROM contacts WHERE contact_id = ?)",
                                [str(contact_id)]).fetchone()[0]
    if not known:
        raise WorkspaceError(f"contact {contact_id!r} has no events and is not in the contacts table")


@dataclass(frozen=True)
class ContactReport:
    """One contact explained: learned groups, the rule breakdown and the two side by side."""

    contact_id: str
    as_of: datetime
    learned_score: float
    baseline: float
    rule_score: float
    rule_points: float
    rules_name: str
    learned: pd.DataFrame  # contact_table
    rules: pd.DataFrame  # rule_breakdown
    comparison: pd.DataFrame  # compare_with_rules
    explanation: ScoreExplanation

    def to_dict(self) -> dict:
        """Plain JSON-ready data (``--json``)."""
        def records(frame: pd.DataFrame) -> list[dict]:
            return [{k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in row.items()}
                    for row in frame.to_dict(orient="records")]

        return {
            "contact_id": self.contact_id,
            "as_of": self.as_of.isoformat(),
            "learned_score": round(self.learned_score, 4),
            "baseline": round(self.baseline, 4),
            "explained": round(self.learned_score - self.baseline, 4),
            "learned": records(self.learned.round(4)),
            "rules": {"name": self.rules_name, "rule_score": round(self.rule_score, 4),
                      "points": round(self.rule_points, 4), "breakdown": records(self.rules.round(4))},
            "comparison": records(self.comparison.round(4)),
        }


def explain_one(
    ws: Workspace, contact_id: str, as_of: datetime, scorer, rules: RuleSet, *, method: str = "pred_contrib",
    checked: bool = False,
) -> ContactReport:
    """Explain one contact's learned score at ``as_of`` and put its rule breakdown beside it.

    ``checked``: the caller has already run :func:`check_contact` (``Project.explain`` does, before
    loading the model)."""
    if not checked:
        check_contact(ws, contact_id)
    con = ws.ibis_connection()
    frame = pd.DataFrame({"contact_id": [str(contact_id)], "as_of": [pd.Timestamp(as_of)]})
    spine = spine_from_frame(con, frame)
    contacts = load_contacts(con)
    features = model_features(con, spine, scorer, query_cache=ws.layout.query_cache)
    explanation = explain_contacts(scorer, features, method=method)
    # the fit criteria read the attributes as they were at as_of, as the features do (rules/attributes_at.py)
    history = None if contacts is None else history_table(con)
    scored = score_contacts(con.table("events"), spine, rules, contacts=rule_contacts(contacts, history, spine))
    breakdown = rule_breakdown(scored, rules)
    return ContactReport(
        contact_id=str(contact_id), as_of=pd.Timestamp(as_of).to_pydatetime(),
        learned_score=float(explanation.score[0]), baseline=explanation.baseline,
        rule_score=float(scored["rule_score"].iloc[0]), rule_points=float(scored["points"].iloc[0]),
        rules_name=rules.name, learned=contact_table(explanation, 0), rules=breakdown,
        comparison=compare_with_rules(explanation, 0, breakdown), explanation=explanation,
    )


@dataclass(frozen=True)
class BatchReport:
    reasons: pd.DataFrame
    rows: int
    seconds_shap: float
    rows_per_second: float


def explain_all(ws: Workspace, choice: SpineChoice, scorer, *, n_reasons: int = 3,
                positive_only: bool = False, chunk_size: int = 20_000) -> BatchReport:
    """Top reasons for every contact of the spine (LightGBM ``pred_contrib``, chunked)."""
    con = ws.ibis_connection()
    features = model_features(con, resolve_spine(con, choice), scorer, query_cache=ws.layout.query_cache)
    started = time.perf_counter()
    explanation = explain_contacts(scorer, features, method="pred_contrib", chunk_size=chunk_size,
                                   with_facts=False)
    seconds = time.perf_counter() - started
    reasons = top_reasons(explanation, n_reasons, positive_only=positive_only)
    return BatchReport(reasons=reasons, rows=len(reasons), seconds_shap=seconds,
                       rows_per_second=len(reasons) / seconds if seconds > 0 else float("inf"))
