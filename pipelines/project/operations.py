"""The model operations of :class:`propensity.Project`: ingest, features, score, train, compare,
explain, tune."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from propensity.pipelines.errors import WorkspaceError
from propensity.pipelines.project.resolve import (
    Resolution,
    Resolved,
    spine_choice,
)
from propensity.pipelines.training.config import TrainConfig

__all__ = ["ModelOperations"]


class ModelOperations(Resolution):
    """What users run on data and models (the CLI, notebooks and benchmarks call these)."""

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
        scored = run_rule_scores(self.ws, spine_choice(at), rule_set, level=level, tables=tables)
        self.record_use("score", rules=rule_set, rules_source=where.path)
        return scored, rule_set

    def score_with_model(self, at, model: str = "champion", name: str | None = None, *, tables=None):
        """Learned scores 0-5 at ``at`` from a registered model, its features built as it was trained."""
        from propensity.pipelines.jobs import run_model_scores

        learned = self.model(model, name)  # the configured registry (mlflow.tracking_uri), loaded once
        scored = run_model_scores(self.ws, spine_choice(at), model, learned.name, tables=tables, scorer=learned.scorer)
        self.record_use("score", model=learned)
        return scored

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
        rule_set = load_rules(train_config.rules)
        self._warn(self.rule_warnings(rule_set))
        result = train(self.ws, train_config, step=step, track=track, tables=tables)
        self._record_training(train_config, rule_set, result)
        return result

    def _record_training(self, train_config: TrainConfig, rule_set, result) -> None:
        """The rules training measured against, the version it registered and a promotion."""
        from propensity.pipelines.project.definitions import ModelRef

        self.record_use("train", rules=rule_set, rules_source=train_config.rules)
        if result.model_version is None:
            return
        name, version = train_config.mlflow.model_name, result.model_version
        self.record_use("train", model=ModelRef(name, version, "registered", f"models:/{name}/{version}"),
                        model_command="register")
        if result.registry is not None and result.registry.promoted:
            self.record_use("train", model=ModelRef(name, version, "champion", f"models:/{name}@champion"),
                            model_command="promote")

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
        return explain_one(self.ws, contact_id, when, learned.scorer, rule_set, checked=True), learned, where

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
        since_at = parse_as_of(since)
        until = parse_as_of(as_of) if as_of is not None else default_as_of(self.ws)
        # what held at --since: given, else the workspace's history (said in the notes), else as now
        if rules_before is not None:
            before_rules = load_rules(self._uses(Resolved(Path(rules_before), "given"), "rules at --since").path)
        else:
            before_rules = self._rules_at(since_at, rule_set, notes)
        earlier = None
        if model_before is not None and learned is not None:
            earlier = self.model(model_before, name)
        elif learned is not None:
            earlier = self._model_at(since_at, learned, notes)
        snapshot = None
        if contacts_before is not None:
            snapshot = read_contacts_snapshot(contacts_before, load_contacts(self.ws.ibis_connection()))
        else:
            from propensity.features.history import contacts_as_of

            recorded = contacts_as_of(self.ws.ibis_connection(), since_at)
            if recorded is not None:
                snapshot = recorded.frame
                notes.append(recorded.note())
        rules_until, at_until = self._contacts_until(learned, until, notes)
        label = f"v{earlier.version} -> v{learned.version}" if earlier is not None else None
        options = {"rules": rule_set, "rules_before": before_rules, "scorer": learned.scorer if learned else None,
                   "scorer_before": earlier.scorer if earlier is not None else None, "model_label": label,
                   "contacts_before": snapshot, "contacts_until": at_until, "contacts_after": rules_until}
        if contact_id is None:
            report = explain_changed_bands(self.ws, since_at, until, **options)
        else:
            report = explain_change(self.ws, [contact_id], since_at, until, **options)
        if notes:
            from dataclasses import replace

            report = replace(report, notes=(*report.notes, *notes))
        return report

    def _contacts_until(self, learned, until, notes: list[str]):
        """The contacts at ``until`` from the attribute history, ``(for the rules, for the learned model)``:
        the rule score reads them as ``score`` does, the model when it reads attributes as of each
        cut-off (as ``score --model`` builds them); None: the current ones (no history)."""
        from propensity.features.config import FeatureConfig
        from propensity.features.history import contacts_as_of

        recorded = contacts_as_of(self.ws.ibis_connection(), until)
        if recorded is None:
            return None, None
        as_of = learned is not None and FeatureConfig.of_model(learned.scorer.feature_config).attributes.values == "as_of"
        who = "rule and learned scores" if as_of else "rule score"
        notes.append(f"{who} at {until:%Y-%m-%d %H:%M}: attributes as they were then, from the workspace's attribute "
                     "history (as `score` reads them)")
        return recorded.frame, recorded.frame if as_of else None

    def _rules_at(self, since, rule_set, notes: list[str]):
        """The rules in use at ``since`` from the workspace's history, when they differ from ``rule_set``."""
        from propensity.pipelines.project.definitions import rules_at, rules_hash

        used = rules_at(self.ws.layout.history_db, since)
        if used is None:
            notes.append(f"rules: none recorded in use by {since:%Y-%m-%d %H:%M}, taken as unchanged (rules part 0; "
                         "--rules-before FILE gives them)")
            return None
        if used.hash == rules_hash(rule_set)[0]:
            notes.append(f"rules at --since: the same as now ({used.describe()}, from the workspace's history)")
            return None
        notes.append(f"rules at --since: {used.describe()} (from the workspace's history)")
        return used.rules

    def _model_at(self, since, learned, notes: list[str]):
        """The version of ``learned``'s model that scored at ``since``, when it is another one."""
        from propensity.pipelines.project.definitions import model_at

        used = model_at(self.ws.layout.history_db, learned.name, since)
        if used is None:
            notes.append(f"model: no version of {learned.name} recorded in use by {since:%Y-%m-%d %H:%M}, taken as "
                         f"v{learned.version} then too (model part 0; --model-before REF gives it)")
            return None
        if str(used.version) == str(learned.version):
            notes.append(f"model at --since: the same version ({used.describe()}, from the workspace's history)")
            return None
        try:
            earlier = self.model(used.version, learned.name)
        except WorkspaceError as exc:  # deleted from the registry since: say so rather than fail
            notes.append(f"model at --since: {used.describe()}, but it cannot be loaded ({exc}); taken as "
                         f"v{learned.version} (model part 0)")
            return None
        notes.append(f"model at --since: {used.describe()} (from the workspace's history)")
        return earlier

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
