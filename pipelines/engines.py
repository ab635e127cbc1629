"""Engines: where the Ibis feature and scoring queries run, and the tables they read.

The feature definitions (``propensity.features.build``) and the rule pass (``propensity.pipelines.rules.score``) are
Ibis expressions, so the same code runs on the embedded DuckDB or on Spark (Ibis' PySpark
backend). This module only chooses the backend and binds the ``events``, ``contacts`` and
``outcomes`` tables:

- ``duckdb`` without ``sources``: the workspace's DuckDB file (what ``propensity ingest`` loaded);
- ``duckdb`` with ``sources``: Parquet files or folders, read in an in-memory DuckDB;
- ``spark`` with ``sources``: Parquet folders (local, ``s3://``, ``abfss://``, ...) or Spark
  tables (``db.events``, Unity Catalog ``catalog.db.events``);
- ``spark`` without ``sources``: the workspace's tables, exported to Parquet for Spark to read
  (the small-data convenience; at scale point ``sources`` at the lake);
- any other Ibis backend (``postgres``, ``snowflake``, ``bigquery``, ...): a warehouse, connected
  with the URL in ``$PROPENSITY_ENGINE_URL`` (or the variable ``url_env`` names), reading tables
  named in ``sources`` (default: ``events``, ``contacts``, ``outcomes``; ``propensity engine
  load`` copies the workspace's there). See ``propensity.pipelines.warehouse``.

Every ``sources`` entry may map the canonical columns to the source's own (``columns:
{contact_id: user_id, ts: occurred_at}``), as ``propensity ingest --map`` does for files.

Sources are trusted to hold the canonical columns (docs/ARCHITECTURE.md) and are checked for
them, not validated row by row: ``propensity ingest`` is the validating path.

Ibis 12's PySpark backend lacks two things the shared code uses; :func:`spark_backend` adds
them without touching Ibis' files: the ``BitOr`` aggregate (Spark SQL's ``bit_or``, used for
active days) and temporary tables (``create_table(..., temp=True)``, used for spines), which
become Spark temporary views.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import ibis
from pydantic import Field, model_validator

from propensity.features.validate import quote_literal
from propensity.pipelines.config_files import load_yaml_config
from propensity.pipelines.engine_sources import (
    BUILTIN_ENGINES,
    KINDS,
    ConfigSection,
    EngineConfigError,
    EngineTables,
    SourcesConfig,
    TableSource,
    canonical_table,
)
from propensity.pipelines.warehouse import DEFAULT_URL_ENV, EngineLoad, ibis_backends, load_workspace, open_warehouse

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from propensity.features.store import Workspace

__all__ = [
    "DEFAULT_SPARK_MASTER",
    "ENGINES",
    "EngineConfig",
    "EngineConfigError",
    "EngineLoad",
    "EngineTables",
    "SourcesConfig",
    "SparkSection",
    "TableSource",
    "check_engine_name",
    "load_engine_config",
    "load_into_engine",
    "open_tables",
    "spark_backend",
    "spark_conf_summary",
    "spark_master",
    "spark_session",
]

ENGINES = BUILTIN_ENGINES  # any other Ibis backend name is a warehouse engine
DEFAULT_SPARK_MASTER = "local[2]"
SPARK_MASTER_ENV = "SPARK_MASTER"
class SparkSection(ConfigSection):
    """The Spark session: master (else ``$SPARK_MASTER``, else ``local[2]``) and extra conf."""

    master: str | None = None
    app_name: str = "propensity"
    conf: dict[str, str] = Field(default_factory=dict)


class EngineConfig(ConfigSection):
    """Which engine runs the queries and which tables it reads (``configs/engines/*.yaml``)."""

    engine: str = "duckdb"
    # the environment variable holding a warehouse engine's connection URL (never the URL itself)
    url_env: str | None = None
    sources: SourcesConfig | None = None
    spark: SparkSection = SparkSection()

    @model_validator(mode="after")
    def _known_engine(self) -> EngineConfig:
        check_engine_name(self.engine)
        if self.url_env is not None and not self.is_warehouse:
            raise ValueError(f"url_env is for warehouse engines (an Ibis backend such as postgres); "
                             f"{self.engine} does not read a URL")
        if self.is_warehouse and self.sources is not None:
            parquet = [k for k in KINDS if (getattr(self.sources, k) or TableSource(table=k)).parquet]
            if parquet:
                raise ValueError(f"the {self.engine} engine reads tables, not Parquet ({', '.join(parquet)}): "
                                 "name its tables (`table: schema.name`), or load the files with "
                                 "`propensity ingest` and copy them with `propensity engine load`")
        return self

    @property
    def is_warehouse(self) -> bool:
        return self.engine not in ENGINES

    @property
    def url_variable(self) -> str:
        return self.url_env or DEFAULT_URL_ENV


def check_engine_name(engine: str) -> str:
    """``engine`` when it is ``duckdb``, ``spark`` or an Ibis backend, else a ValueError listing them."""
    if engine in ENGINES or engine in ibis_backends():
        if engine == "pyspark":
            raise ValueError("use the engine name `spark` (Ibis' PySpark backend with the project's settings)")
        return engine
    raise ValueError(f"engine must be duckdb, spark or an Ibis backend ({', '.join(ibis_backends())}), "
                     f"not {engine!r}")


def load_engine_config(path: str | Path | None) -> EngineConfig:
    """Read and validate an engine YAML (``None``: the default, DuckDB on the workspace)."""
    if path is None:
        return EngineConfig()
    return load_yaml_config(path, EngineConfig, EngineConfigError, not_found="engine config not found",
                            invalid="invalid engine config", empty_ok=True)


def spark_master(configured: str | None = None) -> str | None:
    """The Spark master: the configured one, else ``$SPARK_MASTER``, else None when spark-submit
    or Databricks started us (their master stands), else ``local[2]``."""
    return configured or os.environ.get(SPARK_MASTER_ENV) or (None if _launched_by_spark() else DEFAULT_SPARK_MASTER)


def _launched_by_spark() -> bool:
    # spark-submit starts the JVM first and hands PySpark its port; Databricks runs its own
    # session. Either way the master is already set and must not be replaced by local[2].
    return "PYSPARK_GATEWAY_PORT" in os.environ or "DATABRICKS_RUNTIME_VERSION" in os.environ


def spark_session(section: SparkSection | None = None) -> SparkSession:
    """A Spark session (an existing one is reused: Spark allows one per process).

    The master is the configured one, else ``$SPARK_MASTER``, else the one ``spark-submit`` or
    Databricks set, else ``local[2]``. Local masters get settings that suit one machine: few
    shuffle partitions (the default 200 makes every small aggregate pay for 200 tasks), no web
    UI or console progress bars. The session time zone is UTC: stored timestamps are naive UTC.
    """
    from pyspark.sql import SparkSession

    section = section or SparkSection()
    master = spark_master(section.master)
    builder = SparkSession.builder.appName(section.app_name).config("spark.sql.session.timeZone", "UTC")
    if master is not None:
        builder = builder.master(master)
    if master is not None and master.startswith("local"):
        builder = builder.config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
        builder = builder.config("spark.sql.shuffle.partitions", "8")
        # Python workers (UDFs, mapInPandas) must run this interpreter, which has our packages;
        # PySpark reads only the environment variable, when the context starts. A user's wins.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in section.conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def spark_backend(session: SparkSession) -> ibis.BaseBackend:
    """An Ibis PySpark backend on ``session`` that can run ``propensity.features.build`` unchanged."""
    _register_spark_shims()
    return _spark_backend_class()().connect(session)


def open_tables(
    config: EngineConfig,
    ws: Workspace | None = None,
    *,
    session: SparkSession | None = None,
) -> EngineTables:
    """Connect the configured engine and bind ``events``, ``contacts``, ``outcomes``.

    Parameters
    ----------
    config : EngineConfig
    ws : Workspace, optional
        Needed when ``config.sources`` is None (the workspace's tables are the sources).
    session : SparkSession, optional
        Spark engine only: use this session instead of building one from ``config.spark``.

    Returns
    -------
    EngineTables
        On DuckDB and Spark the tables are also registered under their canonical names
        (``con.table("events")``); a warehouse is not written to (its tables are read as named).
    """
    if config.is_warehouse:
        return open_warehouse(config.engine, config.url_env, config.sources)
    if config.sources is None and ws is None:
        raise EngineConfigError("give the engine `sources` or a workspace to read from")
    if config.engine == "duckdb":
        return _open_duckdb(config, ws)
    con = spark_backend(session or spark_session(config.spark))
    sources = config.sources or _export_workspace(ws)
    tables = {kind: _bind(con, kind, getattr(sources, kind)) for kind in KINDS}
    return EngineTables("spark", con, tables["events"], tables["contacts"], tables["outcomes"])


# ----------------------------------------------------------------------------- DuckDB


def _open_duckdb(config: EngineConfig, ws: Workspace | None) -> EngineTables:
    if config.sources is None:
        con = ws.ibis_connection()
        counts = ws.counts()
        tables = {kind: con.table(kind) if counts.get(kind, 0) else None for kind in KINDS}
        if tables["events"] is None:
            from propensity.pipelines.errors import WorkspaceError

            raise WorkspaceError("the workspace has no events yet: run `propensity ingest events FILE` first")
        return EngineTables("duckdb", con, tables["events"], tables["contacts"], tables["outcomes"])
    con = ibis.duckdb.connect()
    con.raw_sql("SET TimeZone = 'UTC'")
    tables = {kind: _bind(con, kind, getattr(config.sources, kind)) for kind in KINDS}
    return EngineTables("duckdb", con, tables["events"], tables["contacts"], tables["outcomes"])


def load_into_engine(ws: Workspace, config: EngineConfig, *, replace: bool = False) -> EngineLoad:
    """Copy the workspace's tables into a warehouse engine (``propensity engine load``;
    :func:`propensity.pipelines.warehouse.load_workspace`)."""
    if not config.is_warehouse:
        raise EngineConfigError(f"`engine load` copies into a warehouse engine (an Ibis backend such as "
                                f"postgres), not {config.engine}")
    return load_workspace(ws, config.engine, config.url_env, config.sources, replace=replace)


# ----------------------------------------------------------------------------- sources


def _bind(con: ibis.BaseBackend, kind: str, source: TableSource | None) -> ibis.Table | None:
    """Read one source, check its columns, and register it as a view named ``kind``."""
    if source is None:
        return None
    try:
        if source.parquet is not None:
            path = source.parquet if con.name == "pyspark" else _duckdb_parquet_path(source.parquet)
            table = con.read_parquet(path)
        else:
            table = con.table(source.table)
    except Exception as exc:  # the backends raise many kinds; the message is what matters
        raise EngineConfigError(f"{kind} source ({source.describe()}) cannot be read: {exc}") from exc
    # A view under the canonical name, so ``con.table("events")`` works on every engine
    # (Spark: a temporary view; DuckDB: a view in the in-memory database).
    return con.create_view(kind, canonical_table(table, kind, source), overwrite=True)


def _duckdb_parquet_path(path: str) -> str:
    # DuckDB reads a folder of part files (as Spark writes them) through a glob; Spark reads
    # folders itself.
    local = Path(path)
    if "://" not in path and local.is_dir():
        return str(local / "**" / "*.parquet")
    return path


def _export_workspace(ws: Workspace) -> SourcesConfig:
    """Write the workspace's non-empty tables to ``<ws>/engine-export/*.parquet`` for Spark."""
    from contextlib import closing

    folder = ws.path / "engine-export"
    folder.mkdir(parents=True, exist_ok=True)
    counts = ws.counts()
    if not counts.get("events"):
        from propensity.pipelines.errors import WorkspaceError

        raise WorkspaceError("the workspace has no events yet: run `propensity ingest events FILE` first")
    found: dict[str, TableSource] = {}
    with closing(ws.connect()) as con:
        for kind in KINDS:
            if counts.get(kind):
                path = folder / f"{kind}.parquet"
                # quoted: a workspace path may hold a ' (COPY takes no parameter for its target)
                con.execute(f"COPY {kind} TO {quote_literal(str(path))} (FORMAT parquet)")
                found[kind] = TableSource(parquet=str(path))
    return SourcesConfig(**found)


# ----------------------------------------------------------------------------- Spark shims

_SHIMS_REGISTERED = False


def _register_spark_shims() -> None:
    """Teach Ibis' PySpark compiler what the shared expressions use and Ibis 12 lacks there.

    - ``BitOr`` (active days): Ibis 12 leaves it undefined for PySpark ("Compilation rule for
      'BitOr' operation is not defined"); Spark SQL has ``bit_or``.
    - JSON property filters (rules' ``where``): Ibis compiles ``properties.cast("json")[key].str``
      to ``get_json_object``, which returns a string *value* (``/pricing``, not ``"/pricing"``),
      and then to a Python UDF that ``json.loads`` it and fails. Spark 4's VARIANT keeps the
      JSON types: ``try_parse_json``, ``variant_get``, ``schema_of_variant``, all native SQL, with
      the semantics of DuckDB's (``.str`` is NULL for a number, ``.float`` NULL for text).

    Done on first use, not at import; idempotent.
    """
    global _SHIMS_REGISTERED
    if _SHIMS_REGISTERED:
        return
    import sqlglot.expressions as sge
    from ibis.backends.sql.compilers.pyspark import PySparkCompiler

    base_cast = PySparkCompiler.visit_Cast

    def visit_BitOr(self, op, *, arg, where, **_):  # noqa: N802 - Ibis' naming
        return self.agg.bit_or(arg, where=where)

    def visit_Cast(self, op, *, arg, to):  # noqa: N802
        if to.is_json() and op.arg.dtype.is_string():
            return self.f.try_parse_json(arg)
        return base_cast(self, op, arg=arg, to=to)

    def visit_JSONGetItem(self, op, *, arg, index):  # noqa: N802
        value = getattr(op.index, "value", None)
        if value is None:
            raise NotImplementedError("JSON lookups on Spark need a literal key or index")
        path = f"$[{value}]" if op.index.dtype.is_integer() else f"$['{value}']"
        return self.f.variant_get(arg, sge.convert(path))

    def unwrap(target: str, *json_types: str, decimal: bool = False):
        def visit(self, op, *, arg):
            kind = self.f.schema_of_variant(arg)
            matches = kind.isin(*[sge.convert(t) for t in json_types])
            if decimal:
                matches = matches.or_(kind.like(sge.convert("DECIMAL%")))
            value = self.f.variant_get(arg, sge.convert("$"), sge.convert(target))
            return sge.Case(ifs=[sge.If(this=matches, true=value)])

        return visit

    numbers = ("TINYINT", "SMALLINT", "INT", "BIGINT", "FLOAT", "DOUBLE")
    PySparkCompiler.visit_BitOr = visit_BitOr
    PySparkCompiler.visit_Cast = visit_Cast
    PySparkCompiler.visit_JSONGetItem = visit_JSONGetItem
    PySparkCompiler.visit_UnwrapJSONString = unwrap("string", "STRING")
    PySparkCompiler.visit_UnwrapJSONBoolean = unwrap("boolean", "BOOLEAN")
    PySparkCompiler.visit_UnwrapJSONInt64 = unwrap("bigint", "TINYINT", "SMALLINT", "INT", "BIGINT")
    PySparkCompiler.visit_UnwrapJSONFloat64 = unwrap("double", *numbers, decimal=True)
    _SHIMS_REGISTERED = True


_BACKEND_CLASS = None


def _spark_backend_class():
    """Ibis' PySpark backend, with ``temp=True`` tables as Spark temporary views."""
    global _BACKEND_CLASS
    if _BACKEND_CLASS is not None:
        return _BACKEND_CLASS
    from ibis.backends.pyspark import Backend

    # Loading the backend through ``ibis.pyspark`` registers its options (the compiler reads
    # ``ibis.options.pyspark``); importing the class alone does not.
    ibis.pyspark.connect  # noqa: B018

    class SparkBackend(Backend):
        def create_table(self, name, /, obj=None, *, schema=None, database=None, temp=None,
                         overwrite=False, **kwargs):
            # Ibis 12 raises NotImplementedError for temp tables on PySpark; spines and the
            # training spine are small, session-scoped tables, which is what a temp view is.
            if not temp:
                return super().create_table(name, obj, schema=schema, database=database,
                                            overwrite=overwrite, **kwargs)
            if obj is None:
                raise NotImplementedError("a temporary Spark table needs data (obj), not only a schema")
            table = obj if isinstance(obj, ibis.Table) else ibis.memtable(obj, schema=schema)
            self._run_pre_execute_hooks(table)
            frame = self._session.sql(self.compile(table))
            if not overwrite and self._session.catalog.tableExists(name):
                raise ValueError(f"temporary view {name!r} exists already")
            frame.createOrReplaceTempView(name)
            return self.table(name)

        def create_view(self, name, /, obj, *, database=None, overwrite=False):
            # Ibis writes `CREATE TEMPORARY VIEW ... AS <sql>`: Spark keeps the text and parses
            # and analyses it again at every reference (the feature query names `events`
            # about ten times: ~10 s of analysis). A view of a DataFrame keeps its analysed plan.
            if database is not None:
                return super().create_view(name, obj, database=database, overwrite=overwrite)
            self._run_pre_execute_hooks(obj)
            if not overwrite and self._session.catalog.tableExists(name):
                raise ValueError(f"temporary view {name!r} exists already")
            self._session.sql(self.compile(obj)).createOrReplaceTempView(name)
            return self.table(name)

    _BACKEND_CLASS = SparkBackend
    return SparkBackend


def spark_conf_summary(session: SparkSession) -> Mapping[str, str]:
    """The settings worth reporting with a benchmark or a run (master, parallelism)."""
    context = session.sparkContext
    return {
        "master": context.master,
        "default_parallelism": str(context.defaultParallelism),
        "shuffle_partitions": session.conf.get("spark.sql.shuffle.partitions"),
        "version": session.version,
    }
