"""The activation operations of :class:`propensity.Project`: the service, monitoring, push,
the CRMs, holdouts and lift."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from propensity.pipelines.errors import WorkspaceError
from propensity.pipelines.project.resolve import (
    Resolution,
    Resolved,
    _parse_end,
    pd_datetime,
)
from propensity.pipelines.shipped import shipped_config

__all__ = ["ActivationOperations"]


class ActivationOperations(Resolution):
    """Scores out to the service and other tools, and what acting on them does."""

    def backfill(self, url: str, write_key: str, *, batch_size: int = 500, attempts: int = 6, progress=lambda _: None):
        """Replay the workspace's contacts and events (oldest first) into a running service through
        ``/v1/batch``, so its scores start from the history; a rerun stores nothing twice."""
        from propensity.pipelines.activation.backfill import backfill

        counts = self.ws.counts()  # zeros for a workspace without a database
        if not counts.get("events"):
            raise WorkspaceError(f"{self.ws.path} has no events to send: run `propensity ingest events FILE` first")
        has_contacts = bool(counts.get("contacts"))
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

    # -- push (pipelines/activation/push.py; the CRMs below) ---------------------------------------

    def service_engine(self):
        """The service database (``<ws>/serve.db`` or ``$DATABASE_URL``) with the activation tables."""
        from propensity.pipelines.activation.tables import create_activation_tables
        from propensity.pipelines.serve.db import database_url, make_engine

        engine = make_engine(database_url(self.ws.path))
        create_activation_tables(engine)
        return engine

    def scores_to_push(self, source: str | None, engine, *, changes: Path | str | None = None):
        """``(contacts as ContactTraits, where they came from)``: a scores file, a table of the service
        database, or (``source`` None) the newest file in ``<ws>/scores``; ``changes``: the file of
        `explain --since --changed-band` whose top reason for each change goes with them."""
        from propensity.pipelines.activation.push import (
            read_scores,
            read_scores_table,
            traits_from_scores,
        )

        if source is None:
            scores_dir = self.ws.layout.scores
            files = sorted((p for p in scores_dir.glob("*") if p.suffix in {".parquet", ".csv", ".jsonl"}),
                           key=lambda p: p.stat().st_mtime) if scores_dir.is_dir() else []
            if not files:
                raise FileNotFoundError(f"no scores in {scores_dir}: run `propensity score` or give --from")
            source = str(files[-1])
            self.report("uses", f"scores: {source} (the newest in {scores_dir})")
        path = Path(source)
        if path.exists() or path.suffix:
            frame, label = read_scores(path), str(path)
        else:
            frame, label = read_scores_table(engine, source), f"table {source}"
        contacts = traits_from_scores(frame, source=label)
        if changes is not None:
            from propensity.pipelines.activation.score_files import (
                change_reasons,
                with_change_reasons,
            )

            kind = "learned" if "learned_score" in frame else "rule"  # the score traits_from_scores pushes
            contacts = with_change_reasons(contacts, change_reasons(read_scores(changes), kind, source=str(changes)))
        return contacts, label

    def push_holdout(self, triggers: Path | str | None = None):
        """The holdout a push applies: the given triggers file's, else the workspace's (if it has one);
        the shipped file has none, so a push without a file of yours holds nobody out."""
        from propensity.pipelines.activation.triggers import load_triggers

        where = self.triggers_path(triggers)
        if where.is_shipped:
            return None
        holdout = load_triggers(where.path).holdout
        if holdout is not None:
            self._uses(where, "holdout")
        return holdout

    def push(self, to: str, contacts, engine, *, batch_size: int = 100, rate: float = 20.0, dry_run: bool = False,
             preview_out: Path | None = None, holdout=None):
        """Contacts (ContactTraits) to Customer.io, a Segment-spec endpoint or a webhook (credentials from the
        environment), only those whose traits changed since the last push there: a PushReport."""
        from propensity.pipelines.activation.push import (
            PushOptions,
            destination_from_env,
            push,
        )

        return push(engine, destination_from_env(to), contacts, options=PushOptions(batch_size=batch_size, rate=rate),
                    dry_run=dry_run, preview_out=preview_out if dry_run else None, holdout=holdout)

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
        from propensity.pipelines.activation.uplift import (
            compare_uplift,
            uplift_unavailable,
        )
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
