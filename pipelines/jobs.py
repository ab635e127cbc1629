"""Jobs: the wiring between the workspace (I/O) and the pure steps. No printing here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import ibis
import pandas as pd

from propensity.features.attributes import resolve_attributes
from propensity.features.auto import resolve_feature_config
from propensity.features.build import (
    build_features,
    discover_event_types,
    feature_columns,
)
from propensity.features.config import FeatureConfig
from propensity.features.history import history_table, values_note
from propensity.features.spine import spine_at, spine_from_frame

# WorkspaceError is re-exported: one class for "the workspace lacks or refuses something"
from propensity.features.store import Workspace, WorkspaceError
from propensity.pipelines.rules.attributes_at import rule_contacts, rule_values_note
from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.rules.score import rollup_accounts, score_contacts
from propensity.pipelines.training.as_trained_sql import features_frame_as_trained

if TYPE_CHECKING:  # pragma: no cover
    from propensity.pipelines.engines import EngineTables

__all__ = [
    "FeatureRun",
    "SpineChoice",
    "WorkspaceError",
    "load_contacts",
    "load_model",
    "model_bands",
    "resolve_spine",
    "run_features",
    "run_rule_scores",
    "table_names",
]


@dataclass(frozen=True)
class SpineChoice:
    """Which (contact_id, as_of) rows to compute: everyone known at ``as_of``, or a named spine."""

    as_of: datetime | None = None
    spine: str | None = None

    def label(self) -> str:
        if self.spine is not None:
            return Path(self.spine).stem
        return self.as_of.strftime("%Y-%m-%dT%H%M%S").removesuffix("T000000")


@dataclass(frozen=True)
class FeatureRun:
    table: str | None  # the DuckDB table; None on Spark and warehouses (the file or folder is the output)
    path: Path
    rows: int
    columns: list[str]
    note: str | None = None  # what `auto` in the feature config chose, and why
    attributes: str | None = None  # contacts columns the guard left out, and whose values the build used


def _resolved(config: FeatureConfig, events: ibis.Table, contacts: ibis.Table | None = None,
              history: ibis.Table | None = None) -> tuple[FeatureConfig, list[str] | None, str | None, str | None]:
    """Resolve `auto` up front, so the run can say what it chose (build_features would do it silently):
    ``(config, types, auto note, attributes note)``; the attributes note names the identifier-like
    contacts columns left out and whose values the build reads (as of each row, or the latest)."""
    config, choice = resolve_attributes(config, contacts)
    attributes = None if contacts is None else "; ".join(
        n for n in (choice.note(), values_note(config, history)) if n) or None
    if config.is_resolved:
        return config, None, None, attributes
    types = list(config.event_types or discover_event_types(events, config))
    resolved, note = resolve_feature_config(config, events, types)
    return resolved, types, note, attributes


def table_names(con: ibis.BaseBackend) -> set[str]:
    """Tables in the workspace database.

    Read through DuckDB's catalog because ibis 12's ``list_tables`` calls an arrow method that
    duckdb 2.0 removed.
    """
    frame = con.table("duckdb_tables", database="system.main").select("table_name").execute()
    return set(frame["table_name"])


def _has_rows(con: ibis.BaseBackend, name: str) -> bool:
    return name in table_names(con) and int(con.table(name).count().execute()) > 0


def _events(con: ibis.BaseBackend) -> ibis.Table:
    if not _has_rows(con, "events"):
        raise WorkspaceError("the workspace has no events yet: run `propensity ingest events FILE` first")
    return con.table("events")


def _contacts(con: ibis.BaseBackend) -> ibis.Table | None:
    return con.table("contacts") if _has_rows(con, "contacts") else None


def load_contacts(con: ibis.BaseBackend) -> pd.DataFrame | None:
    """The contacts table as pandas, or None when none were ingested."""
    table = _contacts(con)
    return None if table is None else table.execute()


def resolve_spine(
    con: ibis.BaseBackend, choice: SpineChoice, *, tables: EngineTables | None = None,
    ws: Workspace | None = None,
) -> ibis.Table:
    """The spine as an Ibis table: contacts known at ``as_of``, a spine file, or a stored spine.

    With ``tables`` (another engine), the spine is built on that engine; a stored spine is read
    from the workspace ``ws`` and loaded there.
    """
    if tables is None:
        events, contacts = _events(con), _contacts(con)
    else:
        con, events, contacts = tables.con, tables.events, tables.contacts
    if choice.spine is None:
        if choice.as_of is None:
            raise ValueError("give --as-of DATE or --spine NAME|FILE")
        return spine_at(events, choice.as_of, contacts=contacts)
    path = Path(choice.spine)
    if path.suffix and path.exists():
        frame = pd.read_parquet(path) if path.suffix in {".parquet", ".pq"} else pd.read_csv(path)
        return spine_from_frame(con, frame)
    stored = f"spine__{choice.spine}"
    if tables is not None and ws is not None and ws.db_path.exists():
        home = ws.ibis_connection()
        if stored in table_names(home):
            return spine_from_frame(con, home.table(stored).execute())
    names = table_names(con) if tables is None else set()
    if stored in names:
        return con.table(stored)
    known = sorted(t.removeprefix("spine__") for t in names if t.startswith("spine__"))
    raise WorkspaceError(
        f"spine {choice.spine!r} is neither a .parquet/.csv file nor a stored spine; stored: {known or 'none'}"
    )


def run_features(
    ws: Workspace, choice: SpineChoice, config: FeatureConfig, out: Path | None = None,
    tables: EngineTables | None = None,
) -> FeatureRun:
    """Build the feature table in DuckDB (table ``features``) and write it to Parquet.

    ``tables``: another DuckDB engine's tables. On Spark use
    ``propensity.pipelines.spark.features.run_spark_features`` (``Project.features`` picks it).
    """
    if tables is not None and tables.is_spark:
        raise ValueError("run_features builds on DuckDB; Spark tables go to spark.features.run_spark_features")
    con = ws.ibis_connection() if tables is None else tables.con
    spine = resolve_spine(con, choice, tables=tables, ws=ws)
    events, contacts = (_events(con), _contacts(con)) if tables is None else (tables.events, tables.contacts)
    history = None if contacts is None or tables is not None else history_table(con)
    config, types, note, attributes = _resolved(config, events, contacts, history)
    expr = build_features(events, spine, config, contacts=contacts, event_types=types, contact_history=history)
    path = Path(out) if out is not None else ws.layout.features / f"features_{choice.label()}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    if tables is not None and tables.is_warehouse:
        # computed in the warehouse, streamed into the file: no table is written to the user's database
        rows = _write_ordered(con, expr, path)
        return FeatureRun(table=None, path=path, rows=rows, columns=feature_columns(expr), note=note,
                          attributes=attributes)
    table = con.create_table("features", expr, overwrite=True)
    _write_ordered(con, table, path)
    rows = int(table.count().execute())
    return FeatureRun(table="features", path=path, rows=rows, columns=feature_columns(table), note=note,
                      attributes=attributes)


def _write_ordered(con: ibis.BaseBackend, table: ibis.Table, path: Path) -> int:
    """``table`` sorted by its keys into ``path`` (.csv, else Parquet); the number of rows written."""
    import pyarrow.parquet as pq

    ordered = table.order_by(["contact_id", "as_of"])
    if path.suffix.lower() == ".csv":
        con.to_csv(ordered, path)
        return sum(1 for _ in path.open("rb")) - 1  # one header line
    con.to_parquet(ordered, path)
    return pq.ParquetFile(path).metadata.num_rows


def run_rule_scores(
    ws: Workspace, choice: SpineChoice, rules: RuleSet, level: str = "contact",
    tables: EngineTables | None = None,
) -> pd.DataFrame:
    """Score the spine with ``rules``; at ``level="account"`` roll contact scores up.

    The event pass runs on the engine of ``tables`` (default: the workspace's DuckDB); the
    per-row steps after it are pandas, one row per spine row. Fit criteria read the attributes as
    they were at each row's as_of when the workspace keeps an attribute history, else the latest
    (``scored.attrs["attribute_values"]`` says which; ``rules/attributes_at.py``).
    """
    if tables is None:
        con = ws.ibis_connection()
        spine = resolve_spine(con, choice)
        events, contacts = _events(con), load_contacts(con)
        history = None if contacts is None else history_table(con)
    else:
        spine = resolve_spine(tables.con, choice, tables=tables, ws=ws)
        events = tables.events
        contacts = None if tables.contacts is None else tables.contacts.execute()
        history = None
    scored = score_contacts(events, spine, rules, contacts=rule_contacts(contacts, history, spine))
    note = None if contacts is None else rule_values_note(rules, history, engine=tables is not None)
    if level == "account":
        if contacts is None:
            raise WorkspaceError("account scores need contacts with account_id: ingest contacts first")
        scored = rollup_accounts(scored, contacts, rules)  # the accounts of today's contacts
    elif level != "contact":
        raise ValueError(f"--level must be contact or account, not {level!r}")
    if note:
        scored.attrs["attribute_values"] = note
    return scored


def store_spine(ws: Workspace, name: str, frame: pd.DataFrame) -> int:
    """Keep a named spine (``contact_id, as_of``) in the workspace as table ``spine__{name}``."""
    missing = {"contact_id", "as_of"} - set(frame.columns)
    if missing:
        raise ValueError(f"spine {name!r} lacks columns {sorted(missing)}")
    spine = frame[["contact_id", "as_of"]].astype({"contact_id": "string"})
    spine["as_of"] = pd.to_datetime(spine["as_of"]).astype("datetime64[us]")
    con = ws.ibis_connection()
    con.create_table(f"spine__{name}", spine, overwrite=True)
    return len(spine)


def load_model(ws: Workspace, model: str, model_name: str):
    """The registered pyfunc: an alias (``champion``), a version number or a models:/ URI."""
    from propensity.pipelines.training.registry import load_model_context

    return load_model_context(ws, model, model_name, None).pyfunc


def model_bands(scorer) -> RuleSet | None:
    """The bands a model was trained with (its rules'), as a RuleSet that only has bands."""
    from propensity.pipelines.rules.config import Band

    bands = scorer.metadata.get("bands")
    if not bands:
        return None
    return RuleSet.model_construct(bands=tuple(Band(name=n, min_score=m) for n, m in bands))


def run_model_scores(
    ws: Workspace, choice: SpineChoice, model: str, model_name: str, tables: EngineTables | None = None,
    pyfunc=None, scorer=None,
) -> pd.DataFrame:
    """Score the spine with a registered learned model (``champion``, a version, or a models:/ URI).

    The model carries the feature config and event types it was trained with, so the features
    are rebuilt exactly as in training. ``tables``: a DuckDB engine other than the workspace
    (on Spark: ``propensity.pipelines.spark.scoring.run_spark_model_scores``, which writes Parquet).
    ``scorer`` (or ``pyfunc``): the model already loaded (``Project.model``, which honours the
    configured tracking URI); else it is loaded from the workspace's own store. The rows are
    scored by the scorer itself, which is what the pyfunc's ``predict`` calls (without MLflow's
    per-call input checks: the features are built from the model's own recorded config).
    """
    from propensity.pipelines.rules.score import assign_bands
    from propensity.pipelines.training.registry import load_model_context

    if scorer is None:
        scorer = pyfunc.unwrap_python_model().scorer if pyfunc is not None else \
            load_model_context(ws, model, model_name, None).scorer
    if tables is None:
        con = ws.ibis_connection()
        spine = resolve_spine(con, choice)
        events, contacts = _events(con), _contacts(con)
        history = None if contacts is None else history_table(con)
        query_cache = ws.layout.query_cache  # the compiled feature query, kept (training/as_trained_sql.py)
    else:
        spine = resolve_spine(tables.con, choice, tables=tables, ws=ws)
        events, contacts, history, query_cache = tables.events, tables.contacts, None, None
    # only the columns the trees split on (and the blend's rule columns): the others cannot move a
    # score, and leaving them out of the query saves DuckDB ~30% of its work (LearnedScorer.columns_read)
    read = scorer.columns_read()
    features = features_frame_as_trained(events, spine, scorer, contacts, history, folder=query_cache, columns=read)
    features = features.reindex(columns=["contact_id", "as_of", *scorer.feature_names])  # unread ones: NaN
    scores = scorer.score(features[scorer.feature_names]).reset_index(drop=True)
    out = features[["contact_id", "as_of"]].reset_index(drop=True).join(scores)
    bands = model_bands(scorer)
    if bands is not None:
        out["band"] = assign_bands(out["learned_score"], bands)
    return out.sort_values(["contact_id", "as_of"]).reset_index(drop=True)
