"""A registered model version, resolved once: alias, version or URI -> the pyfunc and its context.

One resolver for every entry point (``propensity.Project.model``, compare, explain): the alias
is pinned to its version at load time (it may move while a command runs), and the version's
context files (:mod:`propensity.pipelines.training.context`) are fetched into the workspace.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

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
    pyfunc: object
    folder: Path | None  # the context files; None for a model registered before models carried them
    params: dict = field(default_factory=dict)

    @property
    def scorer(self):
        return self.pyfunc.unwrap_python_model().scorer

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
    return ModelContext(name=name, ref=ref, uri=uri, version=version, run_id=run_id, pyfunc=pyfunc,
                        folder=folder, params=params)


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
