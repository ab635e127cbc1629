"""A registered model version, resolved once: alias, version or URI -> the pyfunc and its context.

One resolver for every entry point (``propensity.Project.model``, compare, explain): the alias
is pinned to its version at load time (it may move while a command runs), and the version's
context files (:mod:`propensity.pipelines.training.context`) are fetched into the workspace.

The workspace's own registry (``<ws>/mlflow.db``, artifacts in ``<ws>/mlartifacts``) is read
without MLflow when nothing points elsewhere (no configured ``tracking_uri``, no other
``$MLFLOW_TRACKING_URI``): the alias or version is looked up in the SQLite file read-only and the
scorer is loaded from the version's artifacts folder, as ``PropensityPyfunc.load_context`` does.
Importing MLflow and opening its store (SQLAlchemy, the schema check) took ~6 s of a cold
`propensity explain` on a loaded 2-core machine, loading the scorer itself ~0.1 s. Anything
unexpected in that file (another schema, a remote artifact location, a model that is not ours)
falls back to MLflow, which then answers as before. The MLflow pyfunc is still there, loaded on
first use of :attr:`ModelContext.pyfunc` (Spark scoring ships it to its workers).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from propensity.features.store import Workspace
from propensity.pipelines.errors import WorkspaceError
from propensity.pipelines.training.context import CONTEXT_FILES, context_folder

__all__ = ["ModelContext", "ModelLocationError", "check_model_location", "load_model_context", "model_uri",
           "registered_models", "registered_versions"]


def model_uri(model: str, model_name: str) -> str:
    """``champion`` -> ``models:/NAME@champion``; ``3`` -> ``models:/NAME/3``; URIs unchanged."""
    if model.startswith(("models:/", "runs:/")):
        return model
    if model.isdigit():
        return f"models:/{model_name}/{model}"
    return f"models:/{model_name}@{model}"


@dataclass
class ModelContext:
    """A registered model version, loaded once, with the files it was trained with."""

    name: str
    ref: str
    uri: str
    version: str | None
    run_id: str | None
    folder: Path | None  # the context files; None for a model registered before models carried them
    params: dict = field(default_factory=dict)
    loaded_pyfunc: object = None  # the MLflow pyfunc, once loaded
    loaded_scorer: object = None  # the LearnedScorer, once loaded
    artifacts: Path | None = None  # the version's local artifacts folder (the pyfunc loads from it)

    @property
    def pyfunc(self):
        """The MLflow pyfunc (loaded on first use when the scorer was read without MLflow)."""
        if self.loaded_pyfunc is None:
            import mlflow

            self.loaded_pyfunc = mlflow.pyfunc.load_model(str(self.artifacts) if self.artifacts else self.uri)
        return self.loaded_pyfunc

    @property
    def scorer(self):
        if self.loaded_scorer is None:
            self.loaded_scorer = self.pyfunc.unwrap_python_model().scorer
        return self.loaded_scorer

    @property
    def label(self) -> str:
        return f"model {self.name} v{self.version}" if self.version else f"model {self.uri}"

    def file(self, kind: str) -> Path | None:
        if self.folder is None:
            return None
        path = self.folder / CONTEXT_FILES[kind]
        return path if path.is_file() else None


class ModelLocationError(ValueError):
    """A registered model whose artifacts are not where the caller trusts them to be."""


def check_model_location(location: str, workspace: Path, label: str = "the model") -> None:
    """Raise :class:`ModelLocationError` unless ``location`` (a URI) is a folder inside
    ``<workspace>/mlartifacts``, symlinks resolved."""
    from urllib.parse import unquote, urlsplit

    root = (Path(workspace) / "mlartifacts").resolve()
    parts = urlsplit(location)
    inside = False
    if parts.scheme in ("", "file") and parts.netloc in ("", "localhost"):
        inside = Path(unquote(parts.path)).resolve().is_relative_to(root)
    if not inside:
        raise ModelLocationError(
            f"{label}: its artifacts are at {location}, outside this workspace's MLflow store ({root}). "
            "Serving a model runs its pickled code, so only models trained into this workspace are "
            "loaded; to serve this one anyway, trust its source and set allow_external_model: true "
            "in the serve config (--config), or serve rules only with --model none"
        )


def load_model_context(ws: Workspace, ref: str, name: str, tracking_uri: str | None, *,
                       trusted_only: bool = False) -> ModelContext:
    """Resolve ``ref`` (alias, version or URI) to its pinned version and load it with its context.

    ``trusted_only``: loading a pyfunc runs its pickled code, so the service loads only models
    whose artifacts lie in this workspace's own ``mlartifacts``; the location checked is the one
    loaded (not the registry name again, which could be re-pointed in between).
    """
    local = None if tracking_uri else _from_workspace_registry(ws, ref, name, trusted_only=trusted_only)
    if local is not None:
        return local
    import mlflow
    from mlflow.tracking import MlflowClient

    from propensity.pipelines.training.tracking import configure_tracking

    configure_tracking(ws.path, tracking_uri, "propensity")
    uri = model_uri(ref, name)
    client = MlflowClient()
    version = run_id = None
    try:
        if uri.startswith("models:/"):
            path = uri.removeprefix("models:/")
            if "@" in path:
                model_name, alias = path.split("@", 1)
                record = client.get_model_version_by_alias(model_name, alias)
            else:
                model_name, number = path.rsplit("/", 1)
                record = client.get_model_version(model_name, number)
            version, run_id, name = str(record.version), record.run_id, model_name
            uri = f"models:/{model_name}/{version}"  # pinned: an alias may move while we work
        location = uri
        if trusted_only:
            if uri.startswith("models:/"):
                location = client.get_model_version_download_uri(name, version)
            check_model_location(location, ws.path, f"{name}@{ref} v{version}" if version else uri)
        pyfunc = mlflow.pyfunc.load_model(location)
    except mlflow.exceptions.MlflowException as exc:
        raise WorkspaceError(f"cannot load model {model_uri(ref, name)}: {exc.message.splitlines()[0].rstrip('.')}; "
                             + _what_to_run(client, name, ref)) from None
    run_id = run_id or getattr(pyfunc.metadata, "run_id", None)
    params: dict = {}
    if run_id:
        try:
            params = dict(client.get_run(run_id).data.params)
        except mlflow.exceptions.MlflowException:
            params = {}
    folder = _context_files(ws, name, version, run_id) if version and run_id else None
    return ModelContext(name=name, ref=ref, uri=uri, version=version, run_id=run_id, loaded_pyfunc=pyfunc,
                        folder=folder, params=params)


def _from_workspace_registry(ws: Workspace, ref: str, name: str, *, trusted_only: bool = False) -> ModelContext | None:
    """The version read from the workspace's SQLite registry without MLflow, or None to ask MLflow
    (another store configured, no such file, or anything in it not as expected)."""
    db = ws.layout.mlflow_db.resolve()
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    # set by the user (or by an earlier call of configure_tracking for this or another workspace)
    if from_env and from_env != f"sqlite:///{db}":
        return None
    uri = model_uri(ref, name)
    if not uri.startswith("models:/") or not db.is_file():
        return None
    path = uri.removeprefix("models:/")
    try:
        with _read_only(db) as con:
            if "@" in path:
                model_name, alias = path.split("@", 1)
                rows = con.execute(
                    "select v.version, v.run_id, v.storage_location, v.status from registered_model_aliases a "
                    "join model_versions v on v.name = a.name and v.version = a.version "
                    "where a.name = ? and a.alias = ?", (model_name, alias)).fetchall()
            else:
                model_name, number = path.rsplit("/", 1)
                rows = con.execute("select version, run_id, storage_location, status from model_versions "
                                   "where name = ? and version = ?", (model_name, int(number))).fetchall()
            if len(rows) != 1:  # none (MLflow says why), or several (registry workspaces): MLflow decides
                return None
            version, run_id, location, status = rows[0]
            params = dict(con.execute("select key, value from params where run_uuid = ?", (run_id,)).fetchall())
    except (sqlite3.Error, ValueError):
        return None
    if status != "READY" or not run_id:
        return None
    if trusted_only:  # as MLflow's path checks it: the location loaded, before its code runs
        check_model_location(location, ws.path, f"{model_name}@{ref} v{version}")
    artifacts = _local_folder(location)
    if artifacts is None:
        return None
    scorer = _load_scorer_artifact(artifacts)
    if scorer is None:
        return None
    version = str(version)
    folder = context_folder(ws.path, model_name, version)
    if not (folder / CONTEXT_FILES["train"]).is_file():
        return None  # not copied into the workspace yet: MLflow downloads it from the run
    return ModelContext(name=model_name, ref=ref, uri=f"models:/{model_name}/{version}", version=version,
                        run_id=run_id, folder=folder, params=params, loaded_scorer=scorer, artifacts=artifacts)


class _read_only:
    """A read-only SQLite connection, closed on exit (sqlite3's own context manager only commits)."""

    def __init__(self, db: Path) -> None:
        self.con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)

    def __enter__(self) -> sqlite3.Connection:
        return self.con

    def __exit__(self, *_) -> None:
        self.con.close()


def _local_folder(location: str | None) -> Path | None:
    if not location:
        return None
    parsed = urlparse(location)
    if parsed.scheme not in ("file", "") or parsed.netloc not in ("", "localhost"):
        return None
    folder = Path(unquote(parsed.path))
    return folder if folder.is_dir() else None


def _load_scorer_artifact(artifacts: Path):
    """The scorer of a model logged by :func:`~propensity.pipelines.training.tracking.log_scorer_model`
    (a ``PropensityPyfunc`` with a ``scorer`` artifact), loaded as its ``load_context`` does; None
    for any other model."""
    import yaml

    try:
        meta = yaml.safe_load((artifacts / "MLmodel").read_text(encoding="utf-8"))
        flavor = meta["flavors"]["python_function"]
        relative = flavor["artifacts"]["scorer"]["path"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    scorer_folder = artifacts / relative
    if flavor.get("loader_module") != "mlflow.pyfunc.model" or not (scorer_folder / "scorer.json").is_file():
        return None
    try:
        json.loads((scorer_folder / "scorer.json").read_text(encoding="utf-8"))["feature_names"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    from propensity.pipelines.training.compiled import compiled_trees_requested
    from propensity.pipelines.training.scorer import load_scorer

    scorer = load_scorer(scorer_folder)
    if compiled_trees_requested():
        scorer.compile_trees()
    return scorer


def _what_to_run(client, name: str, ref: str) -> str:
    """The next step for a reference that does not resolve: train, or name a version that exists.

    A model that `train` registered but did not promote has no ``champion`` alias; "run train
    first" would send the user round in a circle.
    """
    import mlflow

    try:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    except mlflow.exceptions.MlflowException:
        versions = []
    if not versions:
        return "run `propensity train` first"
    listed = ", ".join(str(v) for v in versions[-5:])
    return (f"{name} has version{'s' if len(versions) > 1 else ''} {listed} registered, not as {ref!r} (`train` "
            f"registers a model that does not beat the rules without promoting it): pass --model {versions[-1]} "
            "to use the newest anyway")


def registered_versions(ws: Workspace, name: str, tracking_uri: str | None) -> list[int]:
    """The version numbers registered under ``name`` (empty when none, or no registry yet)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from propensity.pipelines.training.tracking import configure_tracking

    configure_tracking(ws.path, tracking_uri, "propensity")
    try:
        return sorted(int(v.version) for v in MlflowClient().search_model_versions(f"name = '{name}'"))
    except mlflow.exceptions.MlflowException:
        return []


def registered_models(ws: Workspace) -> dict[str, dict]:
    """Every model registered in the workspace's own MLflow store: its versions and aliases,
    e.g. ``{"propensity": {"versions": [1, 2], "aliases": {"champion": 2}}}``."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from propensity.pipelines.training.tracking import configure_tracking

    configure_tracking(ws.path, None, "propensity")
    client = MlflowClient()
    out: dict[str, dict] = {}
    try:
        for model in client.search_registered_models():
            versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{model.name}'"))
            out[model.name] = {"versions": versions,
                               "aliases": {alias: int(v) for alias, v in sorted(model.aliases.items())}}
    except mlflow.exceptions.MlflowException:
        return {}
    return out


def _context_files(ws: Workspace, name: str, version: str, run_id: str) -> Path | None:
    """The version's context folder in the workspace, downloaded from its run when missing.

    None for a model registered before versions carried their context (its run has no
    ``context/`` artifacts).
    """
    import mlflow

    folder = context_folder(ws.path, name, version)
    if (folder / CONTEXT_FILES["train"]).is_file():
        return folder
    try:
        listed = mlflow.artifacts.list_artifacts(run_id=run_id, artifact_path="context")
    except Exception:  # an unreachable or foreign artifact store: treat as a model without context
        return None
    if not listed:
        return None
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="context", dst_path=str(staging))
    shutil.rmtree(folder, ignore_errors=True)
    (staging / "context").rename(folder)
    shutil.rmtree(staging, ignore_errors=True)
    return folder
