"""The application layer: a workspace, and the answer to "which config, rules and model?".

Every entry point (the CLI, the notebooks, a user's own code through ``propensity.Project``) asks
here, so the rule is written once: what the user gave, else the context of the model being used
(the train config, rules, features and learned points it was trained with, carried by the
registered version), else the workspace's own copies (what ``propensity init`` wrote), else the
configs shipped with the package. Each answer says where it came from, so a command can say which
file it used instead of silently using another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from propensity.features.store import Workspace
from propensity.pipelines.errors import WorkspaceError
from propensity.pipelines.shipped import shipped_config
from propensity.pipelines.training.config import TrainConfig, load_train_config
from propensity.pipelines.training.registry import ModelContext, load_model_context

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

    # -- the operations users run (the CLI, notebooks and benchmarks call these) ---------------

    def ingest(self, kind: str, path: str | Path, *, fmt: str | None = None,
               column_map: dict[str, str] | None = None, encoding: str = "utf-8"):
        """Validate and load a file of ``kind`` (events, contacts, outcomes); rejects are kept."""
        from propensity.features.store import ingest_file

        return ingest_file(self.ws, kind, path, fmt=fmt, column_map=column_map, encoding=encoding)

    def features(self, at, *, config: Path | str | None = None, out: Path | None = None, tables=None):
        """Point-in-time features at ``at`` (a cut-off date or a :class:`SpineChoice`)."""
        from propensity.features.config import load_feature_config
        from propensity.pipelines.jobs import run_features

        # the file training reads (given, the workspace's, else the shipped one), not FeatureConfig()'s defaults
        where = self._uses(self._file("features", config, None), "feature config")
        feature_config = load_feature_config(where.path)
        if tables is not None and tables.is_spark:
            from propensity.pipelines.spark.features import run_spark_features

            return run_spark_features(self.ws, spine_choice(at), feature_config, out, tables)
        return run_features(self.ws, spine_choice(at), feature_config, out=out, tables=tables)

    def load_engine(self, config=None, *, replace: bool = False):
        """Copy the workspace's events, contacts and outcomes into a warehouse engine (``propensity
        engine load``); ``config``: an :class:`~propensity.pipelines.engines.EngineConfig` or a YAML path."""
        from propensity.pipelines.engines import (
            EngineConfig,
            load_engine_config,
            load_into_engine,
        )

        engine_config = config if isinstance(config, EngineConfig) else load_engine_config(config)
        return load_into_engine(self.ws, engine_config, replace=replace)

    def score(self, at, *, rules: Path | str | None = None, level: str = "contact", tables=None):
        """Rule scores 0-5 at ``at`` with the resolved rules: ``(frame, RuleSet)``."""
        from propensity.pipelines.jobs import run_rule_scores

        rule_set, where, warnings = self.rules(rules)
        self._uses(where, "rules")
        self._warn(warnings)
        return run_rule_scores(self.ws, spine_choice(at), rule_set, level=level, tables=tables), rule_set

    def score_with_model(self, at, model: str = "champion", name: str | None = None, *, tables=None):
        """Learned scores 0-5 at ``at`` from a registered model, its features built as it was trained."""
        from propensity.pipelines.jobs import run_model_scores

        learned = self.model(model, name)  # the configured registry (mlflow.tracking_uri), loaded once
        return run_model_scores(self.ws, spine_choice(at), model, learned.name, tables=tables, pyfunc=learned.pyfunc)

    def train(self, config: TrainConfig | Path | str | None = None, *, track: bool = True, tables=None,
              step: Callable[[str], None] = lambda _: None):
        """Train, calibrate, evaluate and (``track``) register; see :func:`training.train.train`.

        ``config``: a validated :class:`TrainConfig` (e.g. an edited copy), a YAML path, or None
        for the resolved default.
        """
        from propensity.pipelines.rules.config import load_rules
        from propensity.pipelines.training.train import train

        if isinstance(config, TrainConfig):
            train_config = config
        else:
            train_config, where = self.train_config(config)
            self._uses(where, "train config")
        self._warn(self.rule_warnings(load_rules(train_config.rules)))
        return train(self.ws, train_config, step=step, track=track, tables=tables)

    def compare(self, model: str = "champion", name: str | None = None, *, config: Path | str | None = None,
                settings=None, learned_rules: Path | str | None = None, backtest: bool = False,
                step: Callable[[str], None] = lambda _: None):
        """Rules vs the learned model vs the learned points on the test cut-off of the model's config."""
        from propensity.pipelines.compare import (
            CompareConfig,
            compare_models,
            run_backtest,
        )
        from propensity.pipelines.compare.evaluation import ModelSource
        from propensity.pipelines.rules.config import load_rules

        learned = self.find_model(model, name, config=config)
        train_config, where = self.train_config(config, model=learned)
        self._uses(where, "train config")
        self._warn(self.rule_warnings(load_rules(train_config.rules)))
        points = self.learned_rules_path(learned_rules, model=learned)
        if points is None:
            raise FileNotFoundError(f"{self.ws.path / 'models'}: no learned points yet; run `propensity train` "
                                    "first or pass --learned-rules")
        self._uses(points, "learned points")
        settings = settings or CompareConfig()
        source = None if learned is None else ModelSource(uri=learned.uri, version=learned.version,
                                                          run_id=learned.run_id, params=learned.params)
        comparison = compare_models(self.ws, train_config, settings, model=model, model_name=name,
                                    learned_rules=points.path, step=step,
                                    scorer=None if learned is None else learned.scorer, source=source)
        if backtest:
            result = run_backtest(self.ws, train_config, settings, step=step)
            comparison.backtest, comparison.backtest_notes = result.table, result.notes
        return comparison

    def explain(self, contact_id: str, *, as_of=None, model: str = "champion", name: str | None = None,
                rules: Path | str | None = None):
        """Why ``contact_id`` has its learned score, beside the rule breakdown of the model's rules."""
        from propensity.pipelines.explain.jobs import (
            check_contact,
            default_as_of,
            explain_one,
        )
        from propensity.pipelines.outputs import parse_as_of

        check_contact(self.ws, contact_id)
        learned = self.model(model, name)
        rule_set, where, warnings = self.rules(rules, model=learned)
        self._uses(where, "rules")
        self._warn(warnings)
        when = parse_as_of(as_of) if as_of is not None else default_as_of(self.ws)
        return explain_one(self.ws, contact_id, when, learned.scorer, rule_set), learned, where

    def explain_change(self, contact_id: str | None, since, *, as_of=None, model: str | None = "champion",
                       name: str | None = None, model_before: str | None = None, rules: Path | str | None = None,
                       rules_before: Path | str | None = None, contacts_before: Path | str | None = None):
        """Why the scores changed between ``since`` and ``as_of`` (default: after the latest event),
        split into new events, decay and expiry, attributes and the rules/model change; one contact,
        or (``contact_id`` None) every contact whose band changed. See :mod:`propensity.pipelines.explain.change`.

        ``model`` None, or no such model registered: the rule score only (said in the notes).
        """
        from propensity.pipelines.explain.change_jobs import (
            explain_change,
            explain_changed_bands,
            read_contacts_snapshot,
        )
        from propensity.pipelines.explain.jobs import check_contact, default_as_of
        from propensity.pipelines.jobs import load_contacts
        from propensity.pipelines.outputs import parse_as_of
        from propensity.pipelines.rules.config import load_rules

        if contact_id is not None:
            check_contact(self.ws, contact_id)
        # the champion is optional (rules only without one, said below); a model named otherwise must exist
        learned = None if model is None else (self.find_model(model, name) if model == "champion"
                                              else self.model(model, name))
        if model_before is not None and learned is None:
            raise WorkspaceError(f"--model-before {model_before}: there is no later model to compare it with "
                                 f"(no registered model {model})")
        notes = []
        if learned is None:
            notes.append("learned score: not explained (no registered model" + (f" {model}" if model else "") + ")")
        rule_set, where, warnings = self.rules(rules, model=learned)
        self._uses(where, "rules")
        self._warn(warnings)
        before_rules = None
        if rules_before is not None:
            before_rules = load_rules(self._uses(Resolved(Path(rules_before), "given"), "rules at --since").path)
        earlier = None
        if model_before is not None and learned is not None:
            earlier = self.model(model_before, name)
        snapshot = None
        if contacts_before is not None:
            snapshot = read_contacts_snapshot(contacts_before, load_contacts(self.ws.ibis_connection()))
        since_at = parse_as_of(since)
        until = parse_as_of(as_of) if as_of is not None else default_as_of(self.ws)
        label = f"v{earlier.version} -> v{learned.version}" if earlier is not None else None
        options = {"rules": rule_set, "rules_before": before_rules, "scorer": learned.scorer if learned else None,
                   "scorer_before": earlier.scorer if earlier is not None else None, "model_label": label,
                   "contacts_before": snapshot}
        if contact_id is None:
            report = explain_changed_bands(self.ws, since_at, until, **options)
        else:
            report = explain_change(self.ws, [contact_id], since_at, until, **options)
        if notes:
            from dataclasses import replace

            report = replace(report, notes=(*report.notes, *notes))
        return report

    def explain_all(self, at, *, model: str = "champion", name: str | None = None, reasons: int = 3,
                    positive_only: bool = False):
        """Top reasons for every contact at ``at`` (LightGBM ``pred_contrib``)."""
        from propensity.pipelines.explain.jobs import explain_all

        learned = self.model(model, name)
        return explain_all(self.ws, spine_choice(at), learned.scorer, n_reasons=reasons, positive_only=positive_only)

    def tune(self, model: str = "champion", name: str | None = None, *, config: Path | str | None = None,
             rules: Path | str | None = None, tune_config=None, fit_rows: int = 40_000,
             proposal_path: Path | str | None = None, step: Callable[[str], None] = lambda _: None):
        """Proposed rules from the model's explanations, backtested: ``(TuneResult, rules path)``.

        ``proposal_path``: where the proposal will be written, refused before any work when it is
        the live rules file (or another rules file that is not a proposal).
        """
        from propensity.pipelines.tune.jobs import check_proposal_path, tune_rules
        from propensity.pipelines.tune.propose import TuneConfig

        learned = self.model(model, name, config=config)
        train_config, where = self.train_config(config, model=learned)
        self._uses(where, "train config")
        # the rules to tune: the ones given, else the ones the (model's) train config names
        rule_set, rules_where, warnings = self.rules(rules or train_config.rules)
        if rules is None:
            self.report("uses", f"rules to tune: {rules_where.path} (the train config's)")
        self._warn(warnings)
        if proposal_path is not None:
            check_proposal_path(Path(proposal_path), rules_where.path)
        result = tune_rules(self.ws, train_config, rule_set, learned.scorer, tune_config or TuneConfig(),
                            fit_rows=fit_rows, step=step)
        return result, rules_where.path

    def backfill(self, url: str, write_key: str, *, batch_size: int = 500, attempts: int = 6, progress=lambda _: None):
        """Replay the workspace's contacts and events (oldest first) into a running service through
        ``/v1/batch``, so its scores start from the history; a rerun stores nothing twice."""
        from propensity.pipelines.activation.backfill import backfill

        if not self.ws.db_path.exists() or not self.ws.counts().get("events"):
            raise WorkspaceError(f"{self.ws.path} has no events to send: run `propensity ingest events FILE` first")
        has_contacts = bool(self.ws.counts().get("contacts"))
        con = self.ws.connect()
        try:
            contacts = con.execute("SELECT * FROM contacts ORDER BY contact_id").df() if has_contacts else None
            reader = con.sql("SELECT * FROM events ORDER BY ts, event_id").to_arrow_reader(50_000)
            chunks = (batch.to_pandas() for batch in reader)  # streamed: the history need not fit in memory
            return backfill(contacts, chunks, url, write_key, batch_size=batch_size, attempts=attempts,
                            progress=progress)
        finally:
            con.close()

    def monitor_config_path(self, given: Path | str | None = None) -> Resolved:
        """The monitor settings: given, else the workspace's ``configs/monitor.yaml``, else shipped."""
        if given is not None:
            return Resolved(Path(given), "given")
        own = self.ws.layout.configs / "monitor.yaml"
        return Resolved(own, "workspace") if own.is_file() else Resolved(shipped_config("monitor.yaml"), "shipped")

    def monitor(self, model: str = "champion", name: str | None = None, *, config: Path | str | None = None,
                monitor_config=None, learned_rules: Path | str | None = None, recompute: bool = False,
                step: Callable[[str], None] = lambda _: None):
        """Rules, champion and learned points measured on every closed cut-off since the champion's
        test cut-off, drift and alerts: a :class:`~propensity.pipelines.monitor.jobs.MonitorResult`.

        Cut-offs already in the workspace's history (``layout.monitor_history``) are read, not
        measured again (``recompute`` measures them all). ``monitor_config``: a
        :class:`MonitorConfig`, a YAML path, or None for the resolved file.
        """
        from propensity.pipelines.monitor.config import (
            MonitorConfig,
            load_monitor_config,
        )
        from propensity.pipelines.monitor.jobs import MonitorInputs, run_monitor
        from propensity.pipelines.rules.config import load_rules

        if not isinstance(monitor_config, MonitorConfig):
            monitor_config = load_monitor_config(self._uses(self.monitor_config_path(monitor_config),
                                                            "monitor config").path)
        learned = self.find_model(model, name, config=config)
        if learned is None:
            self.report("warning", f"no registered model {model!r}: monitoring the rules and the learned points only")
        train_config, where = self.train_config(config, model=learned)
        self._uses(where, "train config")
        points = self.learned_rules_path(learned_rules, model=learned)
        if points is not None:
            self._uses(points, "learned points")
        inputs = MonitorInputs(train_config=train_config, rules=load_rules(train_config.rules),
                               rules_path=Path(train_config.rules),
                               points=None if points is None else load_rules(points.path),
                               points_path=None if points is None else points.path,
                               scorer=None if learned is None else learned.scorer,
                               model_label=None if learned is None else learned.label)
        return run_monitor(self.ws, inputs, monitor_config, recompute=recompute, step=step)

    def notify_alerts(self, alerts, meta) -> int:
        """Queue ``alerts`` as signed webhooks in the service database's outbox; returns how many were new."""
        from propensity.pipelines.monitor.notify import queue_alerts
        from propensity.pipelines.serve.db import database_url, make_engine

        engine = make_engine(database_url(self.ws.path))
        try:
            return queue_alerts(engine, alerts, meta)
        finally:
            engine.dispose()

    def triggers_path(self, given: Path | str | None = None) -> Resolved:
        """The triggers file: given, else the workspace's ``configs/triggers.yaml``, else shipped."""
        if given is not None:
            return Resolved(Path(given), "given")
        own = self.ws.path / "configs" / "triggers.yaml"
        return Resolved(own, "workspace") if own.is_file() else Resolved(shipped_config("triggers.yaml"), "shipped")

    # -- CRM (pipelines/activation/crm; extra `crm`) ---------------------------------------------

    def crm_config(self, given: Path | str | None = None):
        """configs/crm.yaml: given, else the workspace's, else shipped; validated, and where it came from."""
        from propensity.pipelines.activation.crm.config import load_crm_config

        own = self.ws.layout.configs / "crm.yaml"
        where = (Resolved(Path(given), "given") if given is not None else
                 Resolved(own, "workspace") if own.is_file() else Resolved(shipped_config("crm.yaml"), "shipped"))
        if where.is_shipped:  # `init` does not write this one: say how to get an editable copy
            self.report("uses", f"CRM config: {where.path} (shipped with the package; `propensity configs copy DIR` "
                                f"gives an editable crm.yaml, used from {own} or with --crm-config)")
            return load_crm_config(where.path), where
        return load_crm_config(where.path), self._uses(where, "CRM config")

    def push_crm(self, to: str, scored, *, config: Path | str | None = None, engine=None, dry_run: bool = False,
                 preview_out: Path | None = None, holdout=None, create_properties: bool = False,
                 environ=None, source: str = "scores", sleep=None):
        """Scores (:class:`ContactTraits` from ``traits_from_scores``) to HubSpot or Salesforce: a CRMPushReport."""
        from propensity.pipelines.activation.crm.jobs import push_crm

        crm_config, _ = self.crm_config(config)
        if engine is None:
            from propensity.pipelines.serve.db import database_url, make_engine

            engine = make_engine(database_url(self.ws.path))
        return push_crm(to, engine, crm_config, scored, self.ws.table("contacts"), layout=self.ws.layout,
                        dry_run=dry_run, preview_out=preview_out, holdout=holdout,
                        create_properties=create_properties, environ=environ, source=source, sleep=sleep)

    def pull_crm(self, crm: str, kind: str, *, config: Path | str | None = None, environ=None, full: bool = False,
                 sleep=None):
        """Outcomes (won deals / opportunities) or contacts from HubSpot or Salesforce, since the last pull,
        through file ingest's validation, rejects and dedupe: a PullReport (its ``ingest`` an IngestReport)."""
        from propensity.pipelines.activation.crm.jobs import crm_api
        from propensity.pipelines.activation.crm.pull import pull

        crm_config, _ = self.crm_config(config)
        api = crm_api(crm, crm_config, environ=environ, layout=self.ws.layout, sleep=sleep)
        return pull(self.ws, crm, kind, api, getattr(crm_config, crm), full=full)

    def lift(self, triggers: Path | str | None = None, *, experiment: str | None = None, data_end=None,
             alpha: float = 0.05, window_days: float | None = None):
        """Treated vs held-out conversion per trigger (and push) and band: a :class:`LiftReport`.

        The holdout is the triggers file's ``holdout`` section (``experiment`` overrides its
        name, e.g. to read an earlier experiment); exposures come from the service database
        (``$DATABASE_URL``, else ``<workspace>/serve.db``), outcomes from the workspace.
        """
        from propensity.pipelines.activation.lift import lift_report

        holdout, exposures, outcomes = self._holdout_data(triggers, experiment)
        end = _parse_end(data_end)
        return lift_report(exposures, outcomes, holdout, data_end=end, alpha=alpha, window_days=window_days)

    def uplift(self, source: str, triggers: Path | str | None = None, *, rules: Path | str | None = None,
               experiment: str | None = None, data_end=None, window_days: float | None = None, k: float = 0.3):
        """An uplift model on ``source``'s closed exposures vs the rule score at exposure (extra ``uplift``).

        Features are the rules' points per rule at each exposure's instant (``ts < at``), so the
        comparison is with the ranking the same rules give; see
        :mod:`propensity.pipelines.activation.uplift`.
        """
        import tempfile

        from propensity.pipelines.activation.lift import label_exposures
        from propensity.pipelines.activation.uplift import compare_uplift, uplift_unavailable
        from propensity.pipelines.jobs import SpineChoice, run_rule_scores

        if (reason := uplift_unavailable()) is not None:
            raise ValueError(reason)
        holdout, exposures, outcomes = self._holdout_data(triggers, experiment)
        end = _parse_end(data_end)
        if end is None:
            end = outcomes["ts"].max() if len(outcomes) else None
        if end is None:
            raise ValueError("no outcomes in the workspace yet: no exposure window has closed")
        labelled = label_exposures(exposures[exposures["source"] == source], outcomes,
                                   window_days or holdout.window_days, end, holdout.outcome)
        closed = labelled[labelled["closed"]].reset_index(drop=True)
        if closed.empty:
            known = sorted(exposures["source"].unique())
            raise ValueError(f"no closed exposures of {source!r} in experiment {holdout.experiment!r} "
                             f"(sources with exposures: {known})")
        rule_set, where, warnings = self.rules(rules)
        self._uses(where, "rules")
        self._warn(warnings)
        with tempfile.TemporaryDirectory() as folder:
            spine = Path(folder) / "exposures.parquet"
            closed[["contact_id", "at"]].rename(columns={"at": "as_of"}).drop_duplicates().to_parquet(spine)
            scored = run_rule_scores(self.ws, SpineChoice(spine=str(spine)), rule_set)
        scored = scored.assign(as_of=pd_datetime(scored["as_of"]))
        frame = closed.merge(scored, left_on=["contact_id", "at"], right_on=["contact_id", "as_of"], how="left")
        features = [c for c in scored.columns if c.startswith("points__")]
        return compare_uplift(frame, features, "rule_score", source=source, k=k)

    def _holdout_data(self, triggers, experiment):
        """The holdout config, its recorded exposures (service database) and the workspace's outcomes."""
        from propensity.pipelines.activation.lift import read_exposures
        from propensity.pipelines.activation.tables import create_activation_tables
        from propensity.pipelines.activation.triggers import load_triggers
        from propensity.pipelines.serve.db import database_url, make_engine

        where = self._uses(self.triggers_path(triggers), "triggers")
        holdout = load_triggers(where.path).holdout
        if holdout is None:
            raise ValueError(f"{where.path}: no holdout section, so nobody was held out and there is no lift "
                             "to measure; add `holdout: {experiment: NAME, share: 0.1}` (docs/CONFIGS.md)")
        if experiment is not None:
            holdout = holdout.model_copy(update={"experiment": experiment})
        engine = make_engine(database_url(self.ws.path))
        try:
            create_activation_tables(engine)
            exposures = read_exposures(engine, holdout.experiment)
        finally:
            engine.dispose()
        outcomes = self.ws.table("outcomes")[["contact_id", "ts", "outcome"]]
        return holdout, exposures, outcomes.assign(ts=pd_datetime(outcomes["ts"]))


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
