"""The application layer: a workspace, and the answer to "which config, rules and model?".

Every entry point (the CLI, the notebooks, a user's own code through ``propensity.Project``) asks
here, so the rule is written once: what the user gave, else the context of the model being used
(the train config, rules, features and learned points it was trained with, carried by the
registered version), else the workspace's own copies (what ``propensity init`` wrote), else the
configs shipped with the package. Each answer says where it came from, so a command can say which
file it used instead of silently using another.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from propensity.features.store import Workspace
from propensity.pipelines.jobs import WorkspaceError, model_uri
from propensity.pipelines.shipped import shipped_config
from propensity.pipelines.training.config import TrainConfig, load_train_config
from propensity.pipelines.training.context import CONTEXT_FILES, context_folder

__all__ = ["ModelContext", "Project", "Resolved"]

# The workspace's own copies, written by `propensity init` (and editable by the user).
WORKSPACE_CONFIGS = {"train": "train.yaml", "rules": "rules.yaml", "features": "features.yaml"}
SHIPPED = {"train": "train.yaml", "rules": "rules/saas.yaml", "features": "features.yaml"}


@dataclass(frozen=True)
class Resolved:
    """A file a command will use, and why that one."""

    path: Path
    source: str  # "given", "model propensity v3", "workspace", "shipped"

    @property
    def is_shipped(self) -> bool:
        return self.source == "shipped"

    def describe(self, what: str) -> str:
        why = {
            "given": "given on the command line",
            "workspace": "the workspace's own, from `propensity init`",
            "shipped": "shipped with the package; `propensity init` writes one from your data",
        }.get(self.source, f"the one {self.source} was trained with")
        return f"{what}: {self.path} ({why})"


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


class Project:
    """One workspace and everything resolved against it.

    Parameters
    ----------
    workspace : Workspace, str or Path, optional
        The workspace folder; default ``$PROPENSITY_WORKSPACE``, else ``./propensity-workspace``.

    Examples
    --------
    >>> project = Project("propensity-workspace")          # doctest: +SKIP
    >>> model = project.model("champion")                   # doctest: +SKIP
    >>> config, where = project.train_config(model=model)   # doctest: +SKIP
    """

    def __init__(self, workspace: Workspace | str | Path | None = None) -> None:
        self.ws = workspace if isinstance(workspace, Workspace) else Workspace.from_env(workspace)
        self._models: dict[tuple[str, str], ModelContext | None] = {}

    @property
    def path(self) -> Path:
        return self.ws.path

    # -- files --------------------------------------------------------------------------------

    def _file(self, kind: str, given: Path | str | None, model: ModelContext | None) -> Resolved:
        if given is not None:
            return Resolved(Path(given), "given")
        if model is not None and (carried := model.file(kind)) is not None:
            return Resolved(carried, model.label)
        own = self.ws.path / "configs" / WORKSPACE_CONFIGS[kind] if kind in WORKSPACE_CONFIGS else None
        if own is not None and own.is_file():
            return Resolved(own, "workspace")
        return Resolved(shipped_config(SHIPPED[kind]), "shipped")

    def train_config_path(self, given: Path | str | None = None, model: ModelContext | None = None) -> Resolved:
        return self._file("train", given, model)

    def train_config(self, given: Path | str | None = None, model: ModelContext | None = None) -> tuple[TrainConfig, Resolved]:
        """The training config to use, validated, and where it came from."""
        where = self.train_config_path(given, model)
        return load_train_config(where.path), where

    def rules_path(self, given: Path | str | None = None, model: ModelContext | None = None) -> Resolved:
        """The rules file: given, else the model's, else the workspace's, else the champion's, else shipped.

        Without a model, the champion's rules come before the shipped SaaS rules: they are at
        least rules about this workspace's events.
        """
        where = self._file("rules", given, model)
        if where.is_shipped and model is None and (champion := self.find_model("champion")) is not None:
            carried = champion.file("rules")
            if carried is not None:
                return Resolved(carried, champion.label)
        return where

    def learned_rules_path(self, given: Path | str | None = None, model: ModelContext | None = None) -> Resolved | None:
        """The learned points file: given, else the model's, else the latest training's (or None)."""
        if given is not None:
            return Resolved(Path(given), "given")
        if model is not None and (carried := model.file("learned_rules")) is not None:
            return Resolved(carried, model.label)
        latest = self.ws.path / "models" / CONTEXT_FILES["learned_rules"]
        return Resolved(latest, "the latest `propensity train`") if latest.is_file() else None

    def rules(self, given: Path | str | None = None, model: ModelContext | None = None):
        """``(RuleSet, Resolved, warnings)``: the rules to use, where from, and the rules in it that
        read no event of this workspace (see :mod:`propensity.pipelines.rules.coverage`)."""
        from propensity.pipelines.rules.config import load_rules

        where = self.rules_path(given, model)
        rules = load_rules(where.path)
        return rules, where, self.rule_warnings(rules)

    def rule_warnings(self, rules) -> list[str]:
        """One sentence per rule of ``rules`` that matches no event in the workspace."""
        from propensity.pipelines.rules.coverage import unread_rules

        if not self.ws.db_path.exists() or not self.ws.counts().get("events"):
            return []
        con = self.ws.ibis_connection()
        return [rule.message(rules.name) for rule in unread_rules(con.table("events"), rules)]

    # -- models -------------------------------------------------------------------------------

    def registry_config(self, given: Path | str | None = None) -> TrainConfig:
        """The train config that says where the registry is (``mlflow.tracking_uri``) and the model's name."""
        return self.train_config(given)[0]

    def find_model(self, ref: str = "champion", name: str | None = None, *, config: Path | str | None = None,
                   tracking_uri: str | None = None) -> ModelContext | None:
        """The registered model ``ref`` (alias, version or models:/ URI), or None when there is none."""
        try:
            return self.model(ref, name, config=config, tracking_uri=tracking_uri)
        except WorkspaceError:
            return None

    def model(self, ref: str = "champion", name: str | None = None, *, config: Path | str | None = None,
              tracking_uri: str | None = None) -> ModelContext:
        """Load a registered model once, with its context files (downloaded into the workspace).

        ``name`` and ``tracking_uri`` default to the train config's (``config``, else the
        workspace's, else the shipped one). Raises :class:`WorkspaceError` (saying what to run) when the registry has no such model.
        """
        if name is None or tracking_uri is None:
            try:
                base = self.registry_config(config)
            except (FileNotFoundError, ValueError):
                base = None
            name = name or (base.mlflow.model_name if base else "propensity")
            tracking_uri = tracking_uri or (base.mlflow.tracking_uri if base else None)
        key = (name, ref)
        if key in self._models:
            cached = self._models[key]
            if cached is None:
                raise WorkspaceError(f"no registered model {name}@{ref}: run `propensity train` first")
            return cached
        if tracking_uri is None and not (self.ws.path / "mlflow.db").exists():
            import os

            if not os.environ.get("MLFLOW_TRACKING_URI"):
                self._models[key] = None  # nothing was ever trained here; MLflow's import is not paid
                raise WorkspaceError(f"no registered model {name}@{ref} in {self.ws.path}: run `propensity train` first")
        context = _load_model_context(self.ws, ref, name, tracking_uri)
        self._models[key] = context
        return context


def _load_model_context(ws: Workspace, ref: str, name: str, tracking_uri: str | None) -> ModelContext:
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
        pyfunc = mlflow.pyfunc.load_model(uri)
    except mlflow.exceptions.MlflowException as exc:
        raise WorkspaceError(f"cannot load model {model_uri(ref, name)}: {exc.message.splitlines()[0]}; "
                             "run `propensity train` first") from None
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
