"""Warehouse engines: any Ibis backend the user has a connection URL for (PostgreSQL, Snowflake, ...).

The feature, spine, rule and training-set expressions are Ibis expressions; on a warehouse they
compile to its SQL and run there, and only their results come back. This module does what is
specific to a warehouse connection, below ``propensity.pipelines.engines`` (which binds tables):

- :func:`open_warehouse`: the engine's tables, as named in the engine config's ``sources``
  (default ``events``, ``contacts``, ``outcomes``), mapped onto the canonical columns.
- :func:`connect_warehouse`: the URL from an environment variable (``$PROPENSITY_ENGINE_URL``,
  or the engine config's ``url_env``), never from a file or the command line, and never shown
  unredacted; errors name the missing variable or the missing driver extra.
- :func:`load_workspace` / :func:`load_tables`: copy the workspace's events, contacts and
  outcomes into the warehouse (``propensity engine load``), PostgreSQL through ``COPY``, other backends through Ibis' insert.
- PostgreSQL shims (:class:`_PostgresCompiler`, set on our connections only): ``bit_count`` of a
  BIGINT (PostgreSQL 14+ counts bits of ``bit(n)``, not of integers) and Ibis 12's JSON text
  lookup, which sqlglot 30.17 renders as ``x ->> VARIADIC ARRAY[]`` (a syntax error).

Tested here on PostgreSQL (``tests/spark/test_engine_parity.py``); other backends are untested
(docs/WAREHOUSES.md).
"""

from __future__ import annotations

import io
import os
import urllib.parse
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import ibis

from propensity.pipelines.engine_sources import (
    KINDS,
    EngineConfigError,
    EngineTables,
    SourcesConfig,
    TableSource,
    canonical_table,
)
from propensity.pipelines.redaction import redact, url_secrets

if TYPE_CHECKING:  # pragma: no cover
    from propensity.features.store import Workspace

__all__ = [
    "DEFAULT_URL_ENV",
    "EngineLoad",
    "LoadedTable",
    "WarehouseError",
    "connect_warehouse",
    "ibis_backends",
    "load_tables",
    "load_workspace",
    "open_warehouse",
    "redacted_url",
    "split_table_name",
    "unsupported_by_engine",
    "url_redactions",
]

DEFAULT_URL_ENV = "PROPENSITY_ENGINE_URL"
# The extra that installs a backend's driver, where the project ships one; else Ibis' own.
_PROJECT_EXTRAS = {"postgres": "propensity[postgres]"}
_SECRET_QUERY_KEYS = ("password", "token", "private_key", "secret", "credentials", "key")
_COPY_BATCH_ROWS = 100_000
_WORKSPACE_TABLES = {"events": "events", "contacts": "contacts", "outcomes": "outcomes"}


class WarehouseError(EngineConfigError):
    """A warehouse connection or load that cannot proceed; the message names what to fix."""


@cache
def ibis_backends() -> tuple[str, ...]:
    """The backend names Ibis knows (its ``ibis.backends`` entry points), installed or not."""
    from importlib.metadata import entry_points

    return tuple(sorted(e.name for e in entry_points(group="ibis.backends")))


def url_redactions(url: str) -> tuple[str, ...]:
    """What must never be shown of ``url``: its userinfo forms and secret-looking query values."""
    query = urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query)
    secret_values = [v for k, v in query if any(s in k.lower() for s in _SECRET_QUERY_KEYS)]
    return (*url_secrets(url, whole=False), *secret_values)


def redacted_url(url: str) -> str:
    """``url`` as it may be shown: password and userinfo masked, secret query values masked."""
    return redact(url, url_redactions(url))


def _scheme_backend(url: str) -> str:
    scheme = urllib.parse.urlsplit(url).scheme.split("+", 1)[0].lower()
    return "postgres" if scheme == "postgresql" else scheme


def _backend_module(engine: str):
    """``ibis.<engine>``, or an error naming the extra that installs its driver."""
    try:
        return getattr(ibis, engine)
    except (ImportError, AttributeError) as exc:  # the backend module imports its driver (psycopg)
        raise _missing_driver(engine, exc) from None


def _missing_driver(engine: str, exc: Exception) -> WarehouseError:
    extra = _PROJECT_EXTRAS.get(engine, f"ibis-framework[{engine}]")
    return WarehouseError(f"the {engine} engine needs its Ibis backend and driver: pip install '{extra}' ({exc})")


def connect_warehouse(engine: str, url_env: str | None = None,
                      environ: Mapping[str, str] | None = None) -> ibis.BaseBackend:
    """Connect Ibis' ``engine`` backend with the URL in ``$url_env`` (default ``$PROPENSITY_ENGINE_URL``).

    Timestamps must read as naive UTC, like the workspace's: Ibis' PostgreSQL backend sets the
    session time zone to UTC itself (tests/spark/test_engine_parity.py checks it against a
    database whose default zone is another).
    """
    environ = os.environ if environ is None else environ
    variable = url_env or DEFAULT_URL_ENV
    if engine not in ibis_backends():
        raise WarehouseError(f"{engine!r} is not an Ibis backend; known: {', '.join(ibis_backends())}")
    _backend_module(engine)
    url = environ.get(variable, "").strip()
    if not url:
        raise WarehouseError(
            f"the {engine} engine reads its connection URL from ${variable}, which is not set "
            f"(e.g. export {variable}='{engine}://user:password@host:5432/database'; "
            "`url_env` in an engine config names another variable)"
        )
    scheme = _scheme_backend(url)
    if scheme != engine:
        raise WarehouseError(f"${variable} holds a {scheme or 'scheme-less'} URL ({redacted_url(url)}), "
                             f"but the engine is {engine}")
    # ibis.connect takes postgres:// (not postgresql+psycopg://, SQLAlchemy's form)
    plain = engine + url[url.index("://"):]
    try:
        con = ibis.connect(plain)
    except ImportError as exc:  # most backends import their driver only when connecting
        raise _missing_driver(engine, exc) from None
    except Exception as exc:  # noqa: BLE001 - drivers raise their own kinds; the redacted message is what matters
        message = redact(f"{type(exc).__name__}: {exc}", [*url_redactions(url), url, plain])
        raise WarehouseError(f"cannot connect the {engine} engine (${variable} = {redacted_url(url)}): "
                             f"{message}") from None
    if engine == "postgres":
        con.compiler = _postgres_compiler()
    return con


def split_table_name(name: str) -> tuple[str, str | tuple[str, str] | None]:
    """``"events"`` -> ``("events", None)``; ``"analytics.events"`` -> ``("events", "analytics")``;
    ``"db.schema.events"`` -> ``("events", ("db", "schema"))`` (Ibis' catalog and database)."""
    parts = name.split(".")
    if len(parts) > 3 or not all(parts):
        raise WarehouseError(f"table {name!r}: expected table, schema.table or catalog.schema.table")
    if len(parts) == 1:
        return parts[0], None
    if len(parts) == 2:
        return parts[1], parts[0]
    return parts[2], (parts[0], parts[1])


def unsupported_by_engine(exc: BaseException) -> str | None:
    """The message for an operation the engine's Ibis backend cannot compile, else None."""
    from ibis.common.exceptions import (
        OperationNotDefinedError,
        UnsupportedOperationError,
    )

    if not isinstance(exc, OperationNotDefinedError | UnsupportedOperationError):
        return None
    return (f"the engine cannot run an operation the features or rules use: {exc}. Backends other than "
            "DuckDB, Spark and PostgreSQL are untested (docs/WAREHOUSES.md)")


# ----------------------------------------------------------------------------- tables


def open_warehouse(engine: str, url_env: str | None, sources: SourcesConfig | None) -> EngineTables:
    """A warehouse's tables, named in ``sources`` or by default ``events``, ``contacts``, ``outcomes``.

    Without ``sources``, contacts and outcomes are optional (absent tables are None); a named
    source must exist. Nothing is created in the warehouse (no views under canonical names).
    """
    con = connect_warehouse(engine, url_env)
    tables: dict[str, ibis.Table | None] = {}
    for kind in KINDS:
        source = getattr(sources, kind) if sources is not None else TableSource.canonical(kind)
        if source is None:
            tables[kind] = None
            continue
        name, database = split_table_name(source.table)
        if sources is None and kind != "events" and name not in con.list_tables(database=database):
            tables[kind] = None
            continue
        try:
            table = con.table(name, database=database)
        except Exception as exc:  # TableNotFound, permissions, ...: the message is what matters
            hint = " (copy the workspace's tables there with `propensity engine load`)" if sources is None else ""
            raise EngineConfigError(f"{kind} source ({source.describe()}) cannot be read on {engine}: "
                                    f"{exc}{hint}") from exc
        tables[kind] = canonical_table(table, kind, source)
    if not len(tables["events"].head(1).execute()):  # one row read, not a count of them all
        raise EngineConfigError(f"events source on {engine} is empty: nothing to compute from")
    return EngineTables(engine, con, tables["events"], tables["contacts"], tables["outcomes"])


@dataclass(frozen=True)
class EngineLoad:
    """What ``propensity engine load`` copied, and where (the URL redacted)."""

    engine: str
    url: str
    tables: list[LoadedTable]


def load_workspace(ws: Workspace, engine: str, url_env: str | None, sources: SourcesConfig | None, *,
                   replace: bool = False) -> EngineLoad:
    """Copy the workspace's non-empty events, contacts and outcomes into a warehouse engine.

    Into the tables ``sources`` names (default ``events``, ``contacts``, ``outcomes``), with the
    canonical columns: a source with a ``columns`` mapping is refused (it describes the user's
    own table, not one this copy writes).
    """
    counts = ws.counts()
    if not counts.get("events"):
        from propensity.features.store import WorkspaceError

        raise WorkspaceError("the workspace has no events yet: run `propensity ingest events FILE` first")
    names = {}
    for kind in KINDS:
        source = (getattr(sources, kind) if sources is not None else None) or TableSource.canonical(kind)
        if source.columns:
            raise EngineConfigError(f"{kind} source ({source.describe()}) maps columns; `engine load` writes "
                                    "the canonical columns: drop `columns` or name another table")
        if counts.get(kind):
            names[kind] = source.table
    con = connect_warehouse(engine, url_env)
    try:
        loaded = load_tables(ws, con, names, replace=replace)
    finally:
        con.disconnect()
    return EngineLoad(engine=engine, url=redacted_url(os.environ[url_env or DEFAULT_URL_ENV]), tables=loaded)


# ----------------------------------------------------------------------------- load


@dataclass(frozen=True)
class LoadedTable:
    """One table copied by :func:`load_tables`: which kind, into which table, how many rows."""

    kind: str
    target: str
    rows: int


def load_tables(
    ws: Workspace,
    target: ibis.BaseBackend,
    names: Mapping[str, str],
    *,
    replace: bool = False,
) -> list[LoadedTable]:
    """Copy the workspace's tables into ``target``: ``{kind: target table name}``.

    Columns and types as in the workspace (NOT NULL kept). An existing target table is an error
    unless ``replace``. Each table is written under a scratch name first and renamed when whole,
    so a failed copy leaves an existing table as it was and no half-filled one behind.
    """
    schemas = {kind: ws.ibis_connection().table(kind).schema() for kind in names}
    loaded = []
    with closing(ws.connect()) as duck:
        for kind, name in names.items():
            table, database = split_table_name(name)
            if table in target.list_tables(database=database) and not replace:
                raise WarehouseError(f"table {name} exists already in the {target.name} engine: "
                                     "pass --replace to overwrite it")
            scratch = f"{table}__propensity_load"
            target.create_table(scratch, schema=schemas[kind], database=database, overwrite=True)
            try:
                # DuckDB's own reader: Ibis 12's to_pyarrow_batches calls a method DuckDB 2.0 removed
                reader = duck.sql(f"SELECT * FROM {_WORKSPACE_TABLES[kind]}").arrow(batch_size=_COPY_BATCH_ROWS)
                rows = sum(_copy_batch(target, scratch, database, batch) for batch in reader)
                if replace:
                    target.drop_table(table, database=database, force=True)
                _rename(target, scratch, table, database)
            except BaseException:
                target.drop_table(scratch, database=database, force=True)
                raise
            loaded.append(LoadedTable(kind=kind, target=name, rows=rows))
    return loaded


def _rename(target: ibis.BaseBackend, old: str, new: str, database) -> None:
    # ALTER TABLE ... RENAME TO: Ibis 12's rename_table is missing on PostgreSQL
    import sqlglot as sg

    schema = database if isinstance(database, str) or database is None else database[1]
    old_name = sg.table(old, db=schema, quoted=True).sql(target.dialect)
    result = target.raw_sql(f"ALTER TABLE {old_name} RENAME TO {sg.to_identifier(new, quoted=True).sql(target.dialect)}")
    if hasattr(result, "close"):
        result.close()


def _copy_batch(target: ibis.BaseBackend, table: str, database, batch) -> int:
    if not batch.num_rows:
        return 0
    if target.name == "postgres":
        _copy_postgres(target, table, database, batch)
    else:
        import pyarrow as pa

        target.insert(table, _nulls_as_none(pa.Table.from_batches([batch])), database=database)
    return batch.num_rows


def _nulls_as_none(table):
    """The batch as pandas with a missing timestamp as None: Ibis 12 inserts through pandas rows, and
    some drivers (sqlite3) cannot bind the NaT that a null timestamp becomes (e.g. contacts'
    ``updated_at``, empty for contacts whose source gives none)."""
    import pyarrow as pa

    frame = table.to_pandas()
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_timestamp(column.type) and column.null_count:
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame


def _copy_postgres(target: ibis.BaseBackend, table: str, database, batch) -> None:
    """One ``COPY ... FROM STDIN (FORMAT csv)`` per batch: Ibis' insert sends one INSERT per row.

    pyarrow's CSV quotes every string and writes NULL as an empty unquoted field, which is
    exactly PostgreSQL's CSV reading of NULL vs ``''``.
    """
    import pyarrow.csv as pcsv
    import sqlglot as sg

    buffer = io.BytesIO()
    pcsv.write_csv(batch, buffer, write_options=pcsv.WriteOptions(include_header=False))
    columns = ", ".join(sg.to_identifier(c, quoted=True).sql("postgres") for c in batch.schema.names)
    schema = database if isinstance(database, str) else None if database is None else database[1]
    qualified = sg.table(table, db=schema, quoted=True).sql("postgres")
    statement = f"COPY {qualified} ({columns}) FROM STDIN (FORMAT csv)"
    with target.con.cursor() as cursor, target.con.transaction(), cursor.copy(statement) as copy:
        copy.write(buffer.getvalue())


# ----------------------------------------------------------------------------- PostgreSQL shims


@cache
def _postgres_compiler():
    """Ibis' PostgreSQL compiler with what the shared expressions need and Ibis 12 gets wrong there."""
    import sqlglot.expressions as sge
    from ibis.backends.sql.compilers.postgres import PostgresCompiler
    from ibis.expr.operations.udf import InputType

    bits64 = sge.DataType.build("BIT(64)", dialect="postgres")

    class Compiler(PostgresCompiler):
        def visit_ScalarUDF(self, op, **kw):
            # features.build declares `bit_count` a builtin (DuckDB, Spark SQL); PostgreSQL's
            # bit_count takes bit(n): a BIGINT casts to bit(64), two's complement, same count.
            if op.__input_type__ == InputType.BUILTIN and op.__func_name__ == "bit_count":
                (arg,) = kw.values()
                return self.f.bit_count(sge.Cast(this=arg, to=bits64))
            return super().visit_ScalarUDF(op, **kw)

        def json_extract_path_text(self, op, arg, *rest):
            # As Ibis writes it, but as an opaque call: sqlglot 30.17 turns the known function
            # into the `->>` operator and then prints `->> VARIADIC ARRAY[]::TEXT[]`.
            name = "jsonb_extract_path_text" if op.arg.dtype.binary else "json_extract_path_text"
            return sge.Anonymous(this=name, expressions=[arg, *rest, sge.Var(this="VARIADIC ARRAY[]::TEXT[]")])

    return Compiler()
