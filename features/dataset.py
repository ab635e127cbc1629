"""Dataset mapping configs: SQL over raw files -> canonical events, contacts and outcomes.

A dataset config (``configs/datasets/*.yaml``) holds one DuckDB query per canonical table and
optional named spines. Queries read the raw files under ``{root}``; ``{root}`` is replaced by
the dataset folder as a quoted-safe absolute path. The folder is, in order of precedence:

1. the ``root`` argument (the CLI's ``--root``);
2. the config's ``root``, a relative path being resolved against the YAML file's folder.

Rows are checked by the same rules as files (``propensity.features.validate``, run as SQL in the
workspace database, so 10 million click rows never pass through pandas), deduplicated on their
ids and loaded (``propensity.features.store``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from propensity.features.schema import KINDS, Kind
from propensity.features.store import IngestReport, Workspace
from propensity.features.validate import DataValidationError, quote_ident

__all__ = [
    "ROOT_PLACEHOLDER",
    "DatasetConfig",
    "dataset_spine",
    "ingest_dataset",
    "load_dataset_config",
    "render_sql",
    "resolve_root",
]

ROOT_PLACEHOLDER = "{root}"
# Contacts first: a reader of the workspace then never sees events of unknown contacts.
_LOAD_ORDER: tuple[Kind, ...] = ("contacts", "events", "outcomes")


class DatasetConfig(BaseModel):
    """A dataset mapping.

    Parameters
    ----------
    name : str
        Short name; rejects are logged with source ``<name>.yaml:<kind>``.
    root : Path or None
        Folder of the raw files (absolute once loaded by :func:`load_dataset_config`).
    description : str
        Free text.
    events, contacts, outcomes : str or None
        DuckDB queries producing the canonical columns of each table (see
        ``propensity.features.schema``); extra contact columns become attributes.
    spines : dict
        Name -> query producing ``contact_id, as_of``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    root: Path | None = None
    description: str = ""
    events: str | None = None
    contacts: str | None = None
    outcomes: str | None = None
    spines: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value.replace("_", "").replace("-", "").isalnum():
            raise ValueError("name may hold letters, digits, '_' and '-' only")
        return value

    def query(self, kind: Kind) -> str | None:
        """The query for ``kind`` (None when the dataset has none)."""
        return getattr(self, kind)


def load_dataset_config(path: str | Path) -> DatasetConfig:
    """Load and validate a dataset YAML; a relative ``root`` is resolved against its folder.

    Raises
    ------
    ValueError
        On an unknown key or a wrong type; the message names the file and the key.
    """
    path = Path(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    root = data.get("root")
    if root is not None and not Path(root).expanduser().is_absolute():
        data["root"] = (path.parent / Path(root).expanduser()).resolve()
    try:
        return DatasetConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
        )
        raise ValueError(f"{path}: invalid dataset config: {problems}") from None


def resolve_root(config: DatasetConfig, root: str | Path | None = None) -> Path | None:
    """The dataset folder: ``root`` if given, else the config's (see the module docstring)."""
    if root is not None:
        return Path(root).expanduser().resolve()
    return config.root


def render_sql(sql: str, root: str | Path | None) -> str:
    """Replace ``{root}`` by ``root`` as a POSIX path, quotes doubled for a SQL literal.

    The placeholder is expected inside single quotes (``'{root}/x.parquet'``). Only the exact
    text ``{root}`` is replaced, so other braces in the SQL (struct literals) are left alone.

    Raises
    ------
    ValueError
        If the SQL uses ``{root}`` and no root is known.
    """
    if ROOT_PLACEHOLDER not in sql:
        return sql
    if root is None:
        raise ValueError("the dataset SQL uses {root}: pass root= (--root) or set root in the YAML")
    return sql.replace(ROOT_PLACEHOLDER, Path(root).as_posix().replace("'", "''"))


def _check_root(root: Path | None, config: DatasetConfig) -> None:
    if root is not None and not root.is_dir():
        raise FileNotFoundError(
            f"dataset {config.name!r}: root folder {root} does not exist; pass root= (--root)"
        )


def ingest_dataset(
    ws: Workspace | str | Path,
    config: DatasetConfig,
    root: str | Path | None = None,
    *,
    now: Any = None,
) -> dict[str, IngestReport]:
    """Run each query of ``config`` in the workspace database and load its rows.

    Parameters
    ----------
    ws : Workspace, str or Path
        The workspace (or its folder).
    config : DatasetConfig
        The mapping.
    root : str or Path, optional
        Overrides ``config.root``.
    now : datetime-like, optional
        Reference for the "not in the future" check.

    Returns
    -------
    dict
        Kind -> :class:`~propensity.features.store.IngestReport`, for the kinds the config maps.
    """
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    folder = resolve_root(config, root)
    _check_root(folder, config)
    reports: dict[str, IngestReport] = {}
    for kind in _LOAD_ORDER:
        sql = config.query(kind)
        if sql is None:
            continue
        reports[kind] = ws.ingest_relation(
            kind,
            render_sql(sql, folder),
            f"{config.name}.yaml:{kind}",
            now=now,
        )
    return {k: reports[k] for k in KINDS if k in reports}


def dataset_spine(
    ws_or_con: Workspace | duckdb.DuckDBPyConnection,
    config: DatasetConfig,
    name: str,
    *,
    root: str | Path | None = None,
) -> pd.DataFrame:
    """Run the spine query ``name``: one row per (contact, as_of) to score or train on.

    Parameters
    ----------
    ws_or_con : Workspace or duckdb.DuckDBPyConnection
        Where the query runs (it may read workspace tables as well as raw files).
    config : DatasetConfig
        The mapping.
    name : str
        A key of ``config.spines``.
    root : str or Path, optional
        Overrides ``config.root``.

    Returns
    -------
    pandas.DataFrame
        ``contact_id`` (str) and ``as_of`` (datetime64[us], naive UTC), sorted, without
        duplicates.

    Raises
    ------
    KeyError
        If the config has no such spine.
    DataValidationError
        If the query lacks ``contact_id`` or ``as_of``, or gives NULLs in them.
    """
    if name not in config.spines:
        raise KeyError(
            f"dataset {config.name!r} has no spine {name!r}; spines: {sorted(config.spines)}"
        )
    folder = resolve_root(config, root)
    _check_root(folder, config)
    sql = render_sql(config.spines[name], folder)
    if isinstance(ws_or_con, Workspace):
        con = ws_or_con.connect()
        try:
            return _run_spine(con, sql, config, name)
        finally:
            con.close()
    return _run_spine(ws_or_con, sql, config, name)


def _run_spine(
    con: duckdb.DuckDBPyConnection, sql: str, config: DatasetConfig, name: str
) -> pd.DataFrame:
    where = f"{config.name}.yaml spine {name!r}"
    columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM ({sql})").fetchall()]
    missing = [c for c in ("contact_id", "as_of") if c not in columns]
    if missing:
        raise DataValidationError(
            f"{where}: missing column(s) {', '.join(map(repr, missing))}; found: {columns}"
        )
    frame = con.execute(
        f"SELECT DISTINCT CAST({quote_ident('contact_id')} AS VARCHAR) AS contact_id, "
        f"CAST(as_of AS TIMESTAMP) AS as_of FROM ({sql}) ORDER BY as_of, contact_id"
    ).df()
    if frame.isna().any().any():
        raise DataValidationError(f"{where}: contact_id and as_of must not be NULL")
    return frame
