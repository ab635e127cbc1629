"""Which config, rules file and model a command uses, and why: the rule written once (see
:mod:`propensity.pipelines.project`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from propensity.features.store import Workspace
from propensity.pipelines.errors import WorkspaceError
from propensity.pipelines.shipped import shipped_config
from propensity.pipelines.training.config import TrainConfig, load_train_config
from propensity.pipelines.training.registry import ModelContext, load_model_context

__all__ = ["ModelContext", "Resolution", "Resolved", "pd_datetime", "spine_choice"]

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


class Resolution:
    """The workspace and what is resolved against it; the operations build on it."""

    def __init__(self, workspace: Workspace | str | Path | None = None, *,
                 report: Callable[[str, str], None] | None = None) -> None:
        self.ws = workspace if isinstance(workspace, Workspace) else Workspace.from_env(workspace)
        self._models: dict[tuple[str, str], ModelContext | None] = {}
        # report(kind, message): kind "uses" (which file and why) or "warning"; the CLI prints
        # them on stderr, elsewhere they go to the `propensity` logger
        self.report = report or _log_report

    def _uses(self, where: Resolved, what: str) -> Resolved:
        self.report("uses", where.describe(what))
        return where

    def record_use(self, command: str, *, rules=None, rules_source: Path | str | None = None,
                   model=None, model_command: str | None = None) -> None:
        """Record in the workspace's history what ``command`` used (``explain --since`` reads it back);
        ``model``: a ModelContext or a :class:`~propensity.pipelines.project.definitions.ModelRef`.
        A failure is a warning, never the command's failure."""
        import sqlite3

        from propensity.pipelines.project import definitions

        path = self.ws.layout.history_db
        try:
            if rules is not None:
                definitions.record_rules(path, rules, command=command, source=rules_source)
            if model is not None:
                definitions.record_model(path, name=model.name, version=model.version, ref=model.ref,
                                         uri=model.uri, command=model_command or command)
        except (sqlite3.Error, OSError) as exc:
            self.report("warning", f"could not record what `{command}` used in {path}: {exc}")

    def _warn(self, lines) -> None:
        for line in lines:
            self.report("warning", line)

    @property
    def path(self) -> Path:
        return self.ws.path

    def info(self) -> dict:
        """What the workspace holds: table counts, the events' span and types, its own configs and
        the registered models (versions and aliases) of its MLflow store, for `propensity info`."""
        counts = self.ws.counts() if self.ws.db_path.exists() or self.ws.path.is_file() else {}
        configs = sorted(str(p.relative_to(self.ws.path)) for p in self.ws.layout.configs.glob("*.yaml"))
        facts: dict = {"workspace": str(self.ws.path.resolve()), "tables": counts, "configs": configs}
        if counts.get("events"):
            con = self.ws.connect()
            try:
                first, last, types = con.execute(
                    "SELECT min(ts), max(ts), count(DISTINCT event_type) FROM events").fetchone()
            finally:
                con.close()
            facts["events"] = {"first": first.isoformat(), "last": last.isoformat(), "event_types": types}
        if self.ws.layout.mlflow_db.exists():
            from propensity.pipelines.training.registry import registered_models

            facts["models"] = registered_models(self.ws)
        return facts

    # -- files --------------------------------------------------------------------------------

    def _file(self, kind: str, given: Path | str | None, model: ModelContext | None) -> Resolved:
        if given is not None:
            return Resolved(Path(given), "given")
        if model is not None and (carried := model.file(kind)) is not None:
            return Resolved(carried, model.label)
        own = self.ws.layout.configs / WORKSPACE_CONFIGS[kind] if kind in WORKSPACE_CONFIGS else None
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
        latest = self.ws.layout.learned_rules
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

    def find_model(self, ref: str = "champion", name: str | None = None, *, config: Path | str | None = None,
                   tracking_uri: str | None = None) -> ModelContext | None:
        """The registered model ``ref`` (alias, version or models:/ URI), or None when there is none."""
        try:
            return self.model(ref, name, config=config, tracking_uri=tracking_uri)
        except WorkspaceError:
            return None

    def model(self, ref: str = "champion", name: str | None = None, *, config: Path | str | None = None,
              tracking_uri: str | None = None, trusted_only: bool = False) -> ModelContext:
        """Load a registered model once, with its context files (downloaded into the workspace).

        ``name`` and ``tracking_uri`` default to the train config's (``config``, else the
        workspace's, else the shipped one). Raises :class:`WorkspaceError` (saying what to run) when the registry has no such model.
        ``trusted_only``: refuse (:class:`ModelLocationError`) a model whose artifacts are outside
        this workspace's ``mlartifacts`` (the service, which unpickles it into a long-lived process).
        """
        if name is None or tracking_uri is None:
            try:
                base = self.train_config(config)[0]  # says where the registry is and the model's name
            except (FileNotFoundError, ValueError):
                base = None
            name = name or (base.mlflow.model_name if base else "propensity")
            tracking_uri = tracking_uri or (base.mlflow.tracking_uri if base else None)
        key = (name, ref, trusted_only)
        if key in self._models:
            cached = self._models[key]
            if cached is None:
                raise WorkspaceError(f"no registered model {name}@{ref}: run `propensity train` first")
            return cached
        if tracking_uri is None and not self.ws.layout.mlflow_db.exists():
            import os

            if not os.environ.get("MLFLOW_TRACKING_URI"):
                self._models[key] = None  # nothing was ever trained here; MLflow's import is not paid
                raise WorkspaceError(f"no registered model {name}@{ref} in {self.ws.path}: run `propensity train` first")
        context = load_model_context(self.ws, ref, name, tracking_uri, trusted_only=trusted_only)
        self._models[key] = context
        return context


def _parse_end(data_end):
    from propensity.pipelines.outputs import parse_as_of

    return parse_as_of(data_end) if data_end is not None else None


def pd_datetime(values):
    """Timestamps as the project keeps them: naive UTC, microseconds."""
    import pandas as pd

    return pd.to_datetime(values).astype("datetime64[us]")


def spine_choice(at):
    """A :class:`SpineChoice` from a cut-off (date, datetime or ISO text) or a SpineChoice."""
    from propensity.pipelines.jobs import SpineChoice
    from propensity.pipelines.outputs import parse_as_of

    return at if isinstance(at, SpineChoice) else SpineChoice(as_of=parse_as_of(at))


def _log_report(kind: str, message: str) -> None:
    import logging

    logger = logging.getLogger("propensity")
    (logger.warning if kind == "warning" else logger.info)(message)
