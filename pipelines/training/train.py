"""`propensity train`: training set -> guard -> models -> calibration -> metrics -> MLflow.

The wiring only; every step is a function of its own module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from propensity.features.config import load_feature_config
from propensity.features.store import Workspace
from propensity.pipelines.rules.config import RuleSet, dump_rules, load_rules
from propensity.pipelines.training.calibration_shift import calibration_shift
from propensity.pipelines.training.config import TrainConfig
from propensity.pipelines.training.cutoffs import CutoffReport
from propensity.pipelines.training.dataset import assemble_training_set
from propensity.pipelines.training.diagnosis import NotEnoughPositives
from propensity.pipelines.training.fit import fit_learned, fit_points, score_probability
from propensity.pipelines.training.leakage import (
    LeakageConfig,
    check_leakage,
    raise_for_leakage,
)
from propensity.pipelines.training.metrics import classification_metrics
from propensity.pipelines.training.model import (
    ModelConfig,
    feature_importance,
    prepare_matrix,
)
from propensity.pipelines.training.sampling import WEIGHT
from propensity.pipelines.training.scorer import LearnedScorer

__all__ = ["NotEnoughPositives", "TrainResult", "train"]

log = logging.getLogger(__name__)
KEYS = ["contact_id", "as_of"]
SPLIT_NAMES = ("train", "valid", "test")


@dataclass
class TrainResult:
    summary: dict
    metrics: pd.DataFrame  # model, split, metric columns
    points_only: bool
    learned_rules_path: Path
    learned_rules: RuleSet
    importance: pd.DataFrame | None = None
    leakage_allowed: list[str] = field(default_factory=list)
    run_id: str | None = None
    model_version: str | None = None
    registry: object | None = None
    tracking_uri: str | None = None
    scorer: LearnedScorer | None = None
    test_scores: pd.DataFrame | None = None
    cutoffs: CutoffReport | None = None  # the cut-offs used per split and the ones dropped, with why
    context_path: Path | None = None  # the registered version's context files in the workspace

    def to_dict(self) -> dict:
        """JSON-ready figures of the run (``propensity train --json``)."""
        metrics = self.metrics.astype(object).where(self.metrics.notna(), None)
        registry = self.registry
        return {
            "summary": self.summary,
            "metrics": metrics.to_dict(orient="records"),
            "points_only": self.points_only,
            "learned_rules": str(self.learned_rules_path),
            "context": None if self.context_path is None else str(self.context_path),
            "run_id": self.run_id, "tracking_uri": self.tracking_uri, "model_version": self.model_version,
            "registry": None if registry is None else {
                "version": registry.version, "promoted": registry.promoted, "reason": registry.reason,
                "gain": registry.gain, "gain_low": registry.gain_low, "gain_high": registry.gain_high,
                "previous_champion": registry.previous_champion},
            "leakage_allowed": self.leakage_allowed,
        }


def _fingerprint(frame: pd.DataFrame) -> str:
    hashed = pd.util.hash_pandas_object(frame[[*KEYS, "label"]], index=False).to_numpy()
    return f"{len(frame)}-{int(hashed.sum(dtype=np.uint64)):016x}"


def _metrics_table(frame: pd.DataFrame, models: dict[str, tuple[str, str]]) -> pd.DataFrame:
    rows = []
    for model, (probability_col, score_col) in models.items():
        for split in SPLIT_NAMES:
            part = frame[frame["split"] == split]
            # every model ranked by its own 0-5 score, as `compare` ranks them (core.py's conventions)
            values = classification_metrics(part["label"].to_numpy(), part[probability_col].to_numpy(),
                                             part[score_col].to_numpy(), rank_by="score")
            rows.append({"model": model, "split": split, **values})
    return pd.DataFrame(rows)


def _attribute_summary(choice, values: str | None) -> dict | None:
    """The contacts columns used as features, those the guard left out (with why), and whose values."""
    if choice is None:
        return None
    return {"used": list(choice.kept), "dropped": dict(choice.dropped), "included": list(choice.included),
            "excluded": list(choice.excluded), "note": choice.note(), "values": values}


def search_summary(fitted, config: TrainConfig) -> dict:
    """What the search ran: trials done of those asked, and whether the time limit cut it."""
    section = config.model
    done = len(fitted.trials) if section.tune else 1
    summary = {"n_trials": section.n_trials if section.tune else 1, "trials_completed": done,
               "cut_by_time_budget": bool(fitted.hit_time_budget), "timeout_seconds": section.timeout_seconds,
               "search_rows": fitted.search_rows, "refitted": fitted.refitted,
               "fit_seconds": round(float(fitted.fit_seconds), 1)}
    if fitted.hit_time_budget:
        summary["note"] = (f"the {section.timeout_seconds:g} s time limit cut the search short after {done} of "
                           f"{summary['n_trials']} trials: this model depends on the machine's load and is not "
                           "reproducible; raise model.timeout_seconds or make trials cheaper (model.search_rows)")
    return summary


def train(
    ws: Workspace,
    config: TrainConfig,
    *,
    step: Callable[[str], None] = lambda _: None,
    track: bool = True,
    tables=None,
) -> TrainResult:
    """Train, calibrate, evaluate and (when ``track``) log and register a propensity model.

    ``tables`` (``propensity.pipelines.engines.EngineTables``): build the training set on that engine
    (e.g. Spark) instead of the workspace's DuckDB; the model is fitted here either way.
    """
    rules = load_rules(config.rules)
    feature_config = load_feature_config(config.features)
    step("assemble the training set")
    if tables is None:
        con = ws.ibis_connection()
        events = con.table("events")
        contacts = con.table("contacts") if ws.counts().get("contacts", 0) else None
        outcomes = ws.table("outcomes")
    else:
        con, events, contacts = tables.con, tables.events, tables.contacts
        if tables.outcomes is None:
            raise ValueError("training needs outcomes: add an `outcomes` source to the engine config")
        outcomes = tables.outcomes.execute()
    ts = assemble_training_set(con, config, rules, feature_config, events=events, contacts=contacts,
                               outcomes=outcomes)
    if ts.feature_note:
        step(f"features: {ts.feature_note}")
    attribute_note = ts.attributes.note() if ts.attributes is not None else None
    if attribute_note:  # said by the CLI (print_training), on the MLflow run and here
        log.warning("training: %s", attribute_note)
    for note in ts.expected_purchases_notes:
        step(f"features: {note}")
    frame = ts.frame
    is_train = frame["split"] == "train"
    # assemble_training_set has raised NotEnoughPositives (with what removed them) below min_positives
    positives = int(frame.loc[is_train, "label"].sum())
    points_only = positives < config.points_only_below

    step("check for leakage")
    X, _ = prepare_matrix(frame[is_train], ts.feature_columns)
    report = check_leakage(X, frame.loc[is_train, "label"].to_numpy(),
                           LeakageConfig(max_single_feature_auc=config.leakage.max_single_feature_auc,
                                         allow=config.leakage.allow))
    raise_for_leakage(report)

    step("learn points for the rules")
    points = fit_points(frame, ts.raw_points, ts.contacts, rules, config.points,
                        prior="hand" if points_only else None)
    learned = points.fit
    frame = frame.assign(rule_probability=score_probability(frame, "rule_score"),
                         points_score=points.score, points_probability=points.probability)
    models = {"rules": ("rule_probability", "rule_score"), "learned_points": ("points_probability", "points_score")}

    scorer = importance = search = shift = None
    rare_categories: dict = {}
    if not points_only:
        step("train LightGBM (Optuna search), calibrate onto the 0-5 scale")
        # assemble_training_set always sets the weights (1 unless negatives were sampled)
        learned_fit = fit_learned(frame, ts.feature_columns, ModelConfig.from_section(config.model),
                                  config.calibration, weights=frame.loc[is_train, WEIGHT].to_numpy(),
                                  rules=rules if config.rule_inputs else None)
        rare_categories = {name: {"dropped": dropped, "of": total} for name, (dropped, total) in learned_fit.pooled.items()}
        frame["probability"] = learned_fit.probability
        frame["learned_score"] = learned_fit.score
        fitted = learned_fit.model
        scorer = LearnedScorer(
            booster=fitted.booster, feature_names=fitted.feature_names, categories=fitted.categories,
            calibrator=learned_fit.calibrator, mapper=learned_fit.mapper, best_iteration=fitted.best_iteration,
            feature_config=ts.feature_config.model_dump(mode="json"), event_types=ts.event_types,
            metadata={"rules": rules.name, "horizon_days": config.horizon_days, "params": fitted.params,
                      "bands": [[b.name, b.min_score] for b in rules.bands]},
            rule_inputs=dump_rules(rules) if config.rule_inputs else None,
            blend=None if learned_fit.blend is None else learned_fit.blend.to_dict(),
            expected_purchases=None if ts.expected_purchases is None else ts.expected_purchases.to_dict(),
        )
        importance = feature_importance(fitted)
        models = {"learned": ("probability", "learned_score"), **models}
        search = search_summary(fitted, config)  # the CLI and the MLflow run say when the time limit cut it
        shift = calibration_shift(frame)  # does the calibration fitted on valid hold on test?

    metrics = _metrics_table(frame, models)
    learned_path = ws.layout.learned_rules
    learned_path.parent.mkdir(parents=True, exist_ok=True)
    learned_path.write_text(dump_rules(learned.rules), encoding="utf-8")
    result = TrainResult(
        summary={"splits": ts.summary, "purged_rows": ts.purged, "features": len(ts.feature_columns),
                 "feature_config": ts.feature_config.model_dump(mode="json"), "feature_choices": ts.feature_note,
                 "positives_train": positives, "points_only_below": config.points_only_below, "data_end": str(ts.data_end), "fingerprint": _fingerprint(frame),
                 "cutoffs": ts.cutoffs.to_dict() if ts.cutoffs is not None else None, "search": search,
                 "rule_inputs": None if scorer is None or scorer.blend is None else scorer.blend,
                 "calibration_shift": shift,
                 "attributes": _attribute_summary(ts.attributes, ts.attribute_values),
                 "rare_categories": rare_categories,
                 "expected_purchases": ts.expected_purchases_notes or None},
        metrics=metrics, points_only=points_only, learned_rules_path=learned_path, learned_rules=learned.rules,
        importance=importance, leakage_allowed=list(getattr(report, "allowed", [])), scorer=scorer,
        test_scores=frame.loc[frame["split"] == "test", [*KEYS, "label", *[c for pair in models.values() for c in pair]]],
        cutoffs=ts.cutoffs,
    )
    if track:
        step("log to MLflow and register")
        from propensity.pipelines.training.run_logging import log_training

        log_training(ws, config, result, frame, learned.coefficients)
    return result
