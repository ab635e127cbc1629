"""The workspace: one DuckDB file holding the canonical tables, plus a folder of reject files.

Loading (features/loading.py) is append-only with dedupe: events and outcomes are keyed by their id (given, or a hash
of the row), so re-ingesting a file adds nothing; contacts are upserted by ``contact_id``.
Good rows are moved by SQL inside DuckDB (``INSERT ... SELECT ... WHERE NOT EXISTS``), never
row by row in Python, and each ingest is one transaction: a file loads completely or not at all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from propensity.features.layout import DB_FILE, WorkspaceLayout
from propensity.features.loading import (
    Relation,
    insert_rejects,
    load_rows,
    relation_name,
    stream_error,
    transaction,
)
from propensity.features.store_errors import WorkspaceError, damaged_store_error, open_error
from propensity.features.schema import (
    KINDS,
    REJECTS,
    TABLES,
    Kind,
    schema_for,
)
from propensity.features.sources import (
    SourceError,
    detect_format,
    open_csv,
    parquet_relation,
    read_frame,
    segment_shaped,
)
from propensity.features.validate import (
    MissingColumnsError,
    ValidationResult,
    good_rows_sql,
    quote_ident,
    quote_literal,
    rejects_sql,
    stage_rows,
)

if TYPE_CHECKING:
    import ibis.backends.duckdb

__all__ = [
    "DB_FILE",
    "ENV_VAR",
    "IngestReport",
    "Workspace",
    "WorkspaceError",
    "damaged_store_error",
    "ingest_file",
]

ENV_VAR = "PROPENSITY_WORKSPACE"
_DEFAULT_PATH = "propensity-workspace"


@dataclass(frozen=True)
class IngestReport:
    """What one ingest did.

    ``read == loaded + updated + duplicates + rejected``.

    Parameters
    ----------
    kind : Kind
        Target table.
    source : str
        Name of the source.
    read : int
        Rows read.
    loaded : int
        New rows added (new contacts, for contacts).
    duplicates : int
        Rows not added because their key was already present, in the table or earlier in the
        same source (contacts: rows that changed nothing).
    rejected : int
        Rows rejected by validation (see the ``rejects`` table and ``rejects_path``).
    updated : int
        Contacts only: existing contacts whose attributes changed.
    rejects_path : Path or None
        CSV file the rejects were appended to, when there were any.
    identical : int
        Events/outcomes without an id: rows identical to an earlier row of the same source,
        kept as distinct events (part of ``loaded``, or of ``duplicates`` on a re-ingest).
    merged : int
        Contacts only: rows of a contact that appears earlier in the same source, merged into
        it column by column (part of ``duplicates``).
    """

    kind: Kind
    source: str
    read: int
    loaded: int
    duplicates: int
    rejected: int
    updated: int = 0
    rejects_path: Path | None = None
    identical: int = 0
    merged: int = 0

    def counts(self) -> str:
        """The counts in words, e.g. ``read 5, loaded 3, duplicates 0, rejected 2 (...)``."""
        updated = f", updated {self.updated:,}" if self.kind == "contacts" else ""
        notes = []
        if self.identical:
            notes.append(
                f"{self.identical:,} rows identical to an earlier row of the file (no id) kept as "
                "distinct events"
            )
        if self.merged:
            notes.append(
                f"{self.merged:,} repeated rows of a contact merged column by column"
            )
        note = f" ({'; '.join(notes)})" if notes else ""
        return (
            f"read {self.read:,}, loaded {self.loaded:,}{updated}, "
            f"duplicates {self.duplicates:,}, rejected {self.rejected:,}{note}"
        )

    def __str__(self) -> str:
        return f"{self.source} -> {self.kind}: {self.counts()}"


class Workspace:
    """A workspace folder: ``propensity.duckdb`` and ``rejects/``.

    Parameters
    ----------
    path : str or Path
        The folder. It is created on the first write, not here.
    memory_limit : str, optional
        DuckDB ``memory_limit`` for this workspace's connections, e.g. ``"1GB"``: DuckDB then
        spills to disk instead (default: DuckDB's, 80% of RAM). Measured on OULAD (10.9M
        events, 2 cores): no limit ~55 s and 3.9 GB peak; ``"1GB"`` ~80 s and 1.3 GB.
    read_only : bool
        Open the database read-only (commands that only read: several can then run on one
        workspace at once, DuckDB allowing many readers or one writer). Temporary tables still
        work; writing a table raises.
    """

    def __init__(
        self, path: str | Path, *, memory_limit: str | None = None, read_only: bool = False
    ) -> None:
        self.path = Path(path)
        self.memory_limit = memory_limit
        self.read_only = read_only

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"

    @classmethod
    def from_env(
        cls,
        path: str | Path | None = None,
        *,
        memory_limit: str | None = None,
        read_only: bool = False,
    ) -> Workspace:
        """The workspace at ``path``, else ``$PROPENSITY_WORKSPACE``, else ``propensity-workspace``.

        The folder is not created until the first write.
        """
        return cls(
            path or os.environ.get(ENV_VAR) or _DEFAULT_PATH,
            memory_limit=memory_limit,
            read_only=read_only,
        )

    @property
    def layout(self) -> WorkspaceLayout:
        """Every file and folder the workspace holds."""
        return WorkspaceLayout(self.path)

    @property
    def db_path(self) -> Path:
        """The DuckDB file."""
        return self.layout.database

    @property
    def rejects_dir(self) -> Path:
        """Folder of ``<kind>-<source stem>.csv`` reject files."""
        return self.layout.rejects

    # ------------------------------------------------------------------ connections

    def connect(self, read_only: bool | None = None) -> duckdb.DuckDBPyConnection:
        """Open the workspace database (the caller closes it).

        A writable connection creates the folder, the file and the canonical tables if needed.
        Read-only (default: the workspace's ``read_only``) needs an existing workspace. The
        session time zone is UTC. Within one process, every connection to the file must use the
        same ``read_only`` (a DuckDB rule).

        Raises
        ------
        WorkspaceError
            If the path is a file, the database is not a DuckDB file, or another process holds
            the database (the message names it).
        """
        read_only = self.read_only if read_only is None else read_only
        self._check_folder()
        if read_only:
            if not self.db_path.exists():
                raise FileNotFoundError(
                    f"no workspace database at {self.db_path}: run `propensity ingest events FILE` "
                    "(or `propensity init`) first"
                )
            con = self._open(lambda ro: duckdb.connect(str(self.db_path), read_only=ro), True)
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            con = self._open(lambda ro: duckdb.connect(str(self.db_path), read_only=ro), False)
            for table in TABLES.values():
                con.execute(table.ddl())
        self._configure(con)
        return con

    def _check_folder(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise WorkspaceError(
                f"the workspace {self.path} is a file, not a folder: pass --workspace (or "
                f"${ENV_VAR}) a folder, new or one propensity made"
            )
        if self.db_path.exists() and not self.db_path.is_file():
            raise WorkspaceError(f"{self.db_path} is not a file: move it aside")

    def _open(self, opener: Callable[[bool], Any], read_only: bool) -> Any:
        """Run ``opener(read_only)`` (a DuckDB or Ibis connect); IO errors as a WorkspaceError.

        Read-only is a request: when this process already holds the file writable (a notebook
        or a test that ingested, then compares), DuckDB refuses a second configuration, and the
        writable one is used (the lock is this process's anyway).
        """
        try:
            try:
                return opener(read_only)
            except duckdb.ConnectionException as exc:
                if "different configuration" not in str(exc):
                    raise
                if not read_only:
                    raise WorkspaceError(
                        f"{self.db_path} is open read-only in this process: close those "
                        "connections (or use one Workspace without read_only) to write"
                    ) from None
                return opener(False)
        except duckdb.IOException as exc:
            raise open_error(self.db_path, exc, read_only) from None

    def _configure(self, con: duckdb.DuckDBPyConnection) -> None:
        """Session settings every connection to the workspace gets, DuckDB's or Ibis'."""
        # Stored timestamps are naive UTC: make casts from/to TIMESTAMPTZ agree with that.
        con.execute("SET TimeZone = 'UTC'").fetchall()
        if self.memory_limit:
            con.execute(f"SET memory_limit = {quote_literal(self.memory_limit)}").fetchall()

    def ibis_connection(self) -> ibis.backends.duckdb.Backend:
        """An Ibis DuckDB backend on the workspace database (tables created if needed; opened
        read-only for a read-only workspace)."""
        import ibis  # heavy; only callers that build Ibis expressions pay for it

        from propensity.features.ibis_import import lazy_compilers

        lazy_compilers()  # the DuckDB compiler only, not Ibis' 19 others (features/ibis_import.py)
        self.connect().close()
        backend = self._open(
            lambda ro: ibis.duckdb.connect(database=str(self.db_path), read_only=ro), self.read_only
        )
        # DuckDB draws its own progress bar on long queries; the CLI has rich bars instead. In
        # Jupyter it is already off, and SETting it at all raises there without ipywidgets.
        if backend.con.execute("SELECT current_setting('enable_progress_bar')").fetchall()[0][0]:
            backend.con.execute("SET enable_progress_bar = false").fetchall()
        self._configure(backend.con)
        return backend

    # ------------------------------------------------------------------ reading

    def table(self, name: str) -> pd.DataFrame:
        """Return a whole table as a pandas frame (empty canonical frame if nothing loaded)."""
        self._check_folder()
        if not self.db_path.exists():
            if name not in TABLES:
                raise KeyError(f"no table {name!r} in {self.path}")
            return pd.DataFrame({c: pd.Series(dtype=object) for c in TABLES[name].names})
        with closing(self.connect()) as con:
            known = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
            if name not in known:
                raise KeyError(f"no table {name!r} in {self.path}; tables: {sorted(known)}")
            frame = con.execute(f"SELECT * FROM {quote_ident(name)}").df()
            types = con.execute(f"DESCRIBE {quote_ident(name)}").fetchall()
        # an all-NULL VARCHAR column comes back as object: keep text columns str throughout
        return frame.astype({r[0]: "str" for r in types if r[1] == "VARCHAR"})

    def counts(self) -> dict[str, int]:
        """Row counts of the canonical tables and of ``rejects`` (zeros for a new workspace)."""
        names = [*KINDS, REJECTS.name]
        self._check_folder()
        if not self.db_path.exists():
            return dict.fromkeys(names, 0)
        with closing(self.connect()) as con:
            sql = " UNION ALL ".join(f"SELECT '{n}', count(*) FROM {n}" for n in names)
            return {n: int(c) for n, c in con.execute(sql).fetchall()}

    # ------------------------------------------------------------------ writing

    def ingest(self, kind: Kind, result: ValidationResult) -> IngestReport:
        """Load an already validated result: append with dedupe (upsert contacts), keep rejects.

        Parameters
        ----------
        kind : {"events", "contacts", "outcomes"}
            Target table (must match ``result.kind``).
        result : ValidationResult
            From :func:`propensity.features.validate.validate`.
        """
        schema_for(kind)
        if kind != result.kind:
            raise ValueError(f"result holds {result.kind}, cannot ingest it as {kind}")
        with closing(self.connect()) as con:
            con.register("__good", result.good)
            con.register("__rejects", result.rejects)
            with transaction(con):
                loaded, updated = load_rows(con, kind, "__good")
                fresh = insert_rejects(con, "SELECT * FROM __rejects")
        path = self._write_rejects(kind, result.source, fresh)
        good = len(result.good)
        return IngestReport(
            kind=kind,
            source=result.source,
            read=result.read,
            loaded=loaded,
            duplicates=result.duplicates + good - loaded - updated,
            rejected=len(result.rejects),
            updated=updated,
            rejects_path=path,
            identical=result.identical,
            merged=result.duplicates if kind == "contacts" else 0,
        )

    def ingest_relation(
        self,
        kind: Kind,
        relation: Relation,
        source: str,
        *,
        column_map: Mapping[str, str] | None = None,
        fold_extras: bool = False,
        infer_types: bool = False,
        now: Any = None,
    ) -> IngestReport:
        """Validate and load rows without bringing them into Python (the path for big sources).

        Parameters
        ----------
        kind : {"events", "contacts", "outcomes"}
            Target table.
        relation : str, pandas.DataFrame, pyarrow.Table or pyarrow.RecordBatchReader
            A DuckDB ``SELECT`` (run on the workspace connection) or rows to scan. A
            ``__row_number`` column, when present, numbers the rows in messages.
        source : str
            Name of the source (a file name), used in messages and reject file names.
        column_map, fold_extras, infer_types, now
            See :func:`propensity.features.validate.stage_rows`.

        Raises
        ------
        DataValidationError
            If a required column is missing (nothing is loaded).
        SourceError
            If a streamed file turns out unreadable half-way (nothing is loaded).
        """
        schema_for(kind)
        with closing(self.connect()) as con:
            # Row order in the tables carries no meaning; not keeping it lets DuckDB insert
            # 10M+ rows in parallel and with less memory.
            con.execute("SET preserve_insertion_order = false")
            name = relation_name(con, relation)
            try:
                with transaction(con):
                    staged = stage_rows(
                        con,
                        name,
                        kind,
                        source,
                        column_map=column_map,
                        fold_extras=fold_extras,
                        infer_types=infer_types,
                        now=now,
                    )
                    good = good_rows_sql(staged, ordered=False)
                    loaded, updated = load_rows(con, kind, f"({good})")
                    fresh = insert_rejects(con, rejects_sql(staged))
                    con.execute(f"DROP TABLE {staged.table}")
            except duckdb.InvalidInputException as exc:
                error = stream_error(source, exc)
                if error is None:
                    raise
                raise error from exc
        path = self._write_rejects(kind, source, fresh)
        return IngestReport(
            kind=kind,
            source=source,
            read=staged.read,
            loaded=loaded,
            duplicates=staged.good - loaded - updated,
            rejected=staged.rejected,
            updated=updated,
            rejects_path=path,
            identical=staged.identical,
            merged=staged.duplicates if kind == "contacts" else 0,
        )

    def _write_rejects(self, kind: str, source: str, rejects: pd.DataFrame) -> Path | None:
        """Append new rejects to ``rejects/<kind>-<source stem>.csv``; return the path."""
        stem = re.sub(r"[^\w.-]+", "_", Path(source).stem) or "source"
        path = self.rejects_dir / f"{kind}-{stem}.csv"
        if rejects.empty:
            return path if path.exists() else None
        self.rejects_dir.mkdir(parents=True, exist_ok=True)
        rejects.to_csv(path, mode="a", header=not path.exists(), index=False)
        return path


# --------------------------------------------------------------------------- files


def ingest_file(
    ws: Workspace | str | Path,
    kind: Kind,
    path: str | Path,
    *,
    fmt: str | None = None,
    column_map: Mapping[str, str] | None = None,
    encoding: str = "utf-8",
    now: Any = None,
    fold_extras: bool | None = None,
) -> IngestReport:
    """Read, validate and load one file.

    CSV is streamed in blocks and Parquet is read by DuckDB, so neither is held in memory;
    JSON Lines and Segment files are read whole (pandas).

    Parameters
    ----------
    ws : Workspace, str or Path
        The workspace (or its folder).
    kind : {"events", "contacts", "outcomes"}
        Target table. For a Segment file: ``events`` loads track calls, ``contacts`` identify
        calls.
    path : str or Path
        The file.
    fmt : {"csv", "parquet", "jsonl", "segment"}, optional
        Overrides the format detected from the extension.
    column_map : mapping, optional
        Canonical name <- source column name, e.g. ``{"contact_id": "user_id"}``.
    encoding : str
        Text encoding of CSV and JSON files.
    now : datetime-like, optional
        Reference for the "not in the future" check (default: the current time).
    fold_extras : bool, optional
        Events: fold non-canonical columns into ``properties``. Default: yes for CSV and JSON
        Lines (flat files have no other place for them), no for Parquet.

    Returns
    -------
    IngestReport
    """
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    fmt = detect_format(path, fmt, encoding)
    fold = fmt in ("csv", "jsonl") if fold_extras is None else fold_extras
    relation: Relation
    if fmt == "parquet":
        relation = parquet_relation(path)
    elif fmt == "csv":
        relation = open_csv(path, encoding=encoding)
    else:
        relation = read_frame(path, kind, fmt=fmt, encoding=encoding)
    try:
        return ws.ingest_relation(
            kind,
            relation,
            path.name,
            column_map=column_map,
            fold_extras=fold and kind == "events",
            # CSV cells are all text: give contact attributes a number/boolean type when they fit
            infer_types=fmt == "csv" and kind == "contacts",
            now=now,
        )
    except MissingColumnsError as exc:
        if fmt == "jsonl" and isinstance(relation, pd.DataFrame) and _segment_rows(relation):
            raise MissingColumnsError(
                f"{exc}. The rows look like Segment calls (type, userId, event, ...): pass "
                "--format segment (fmt='segment') to read track calls as events and identify "
                "calls as contacts"
            ) from None
        raise
    except (duckdb.InvalidInputException, duckdb.IOException) as exc:
        if (damaged := damaged_store_error(exc)) is not None:
            raise damaged from None  # the workspace's file, not the source
        if fmt != "parquet":
            raise
        # the magic bytes were right but the content is not (cut short, damaged)
        first = str(exc).splitlines()[0]
        raise SourceError(f"{path.name}: cannot read the Parquet file: {first}") from None


def _segment_rows(frame: pd.DataFrame) -> bool:
    """Whether most rows of a JSON Lines frame have the shape of Segment calls."""
    if "type" not in frame.columns or frame.empty:
        return False
    records = frame.drop(columns=[c for c in frame.columns if c.startswith("__")]).head(100)
    shaped = [segment_shaped({k: v for k, v in r.items() if v is not None}) for r in records.to_dict("records")]
    return sum(shaped) * 2 > len(shaped)
