"""Walk-forward backtest: is the gap between the rules and the learned models stable over time?

At each past cut-off ``c`` the learned model and the learned points are refitted on what was
known at ``c`` and scored on ``c``'s contacts, as if the team had retrained then:

* train and valid rows are the training config's grid rows whose label windows had *closed* by
  ``c`` (the training split logic, applied to the rows up to ``c``); overlapping cut-offs are
  purged as in training;
* features and rule points use events with ``ts < as_of`` of each row; labels of ``c``'s rows
  come from ``[c, c + horizon)`` and only score, never fit;
* the hand rules are fixed, so they need no refit; their probability (for Brier/ECE) is
  calibrated on the valid rows of ``c``.

Scoring past cut-offs with today's champion instead would test it on its own training rows.
Two things are shared across cut-offs and are stated rather than hidden: LightGBM's fixed
default parameters (``backtest.tune: false``; a search per cut-off is optional), and the list of
event types that becomes feature columns (discovered over all events; a type first seen after
``c`` is a column of zeros at ``c``, so no value from the future reaches a row).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

from propensity.features.config import load_feature_config
from propensity.features.store import Workspace
from propensity.pipelines.compare.config import CompareConfig
from propensity.pipelines.compare.core import DEFAULT_MODELS, compare_scores
from propensity.pipelines.compare.evaluation import (
    EvaluationData,
    feature_frame,
    labelled_rows,
    raw_points,
    rule_contacts_of,
    split_rows,
)
from propensity.pipelines.rules.config import RuleSet, load_rules
from propensity.pipelines.rules.score import rescale_raw_points, score_frame
from propensity.pipelines.training.config import TrainConfig
from propensity.pipelines.training.expected_purchases import (
    fit_expected_purchases,
    purchase_type_names,
)
from propensity.pipelines.training.fit import fit_learned, fit_points, score_probability
from propensity.pipelines.training.model import ModelConfig
from propensity.pipelines.training.rule_inputs import add_rule_inputs

__all__ = ["Backtest", "choose_cutoffs", "fit_and_score", "gap_stability", "rescale_raw_points", "run_backtest"]

KEYS = ["contact_id", "as_of"]


@dataclass
class Backtest:
    """One row per (cut-off, model) and the cut-offs left out, with why."""

    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _has_history(labelled: pd.DataFrame, config: TrainConfig, cutoff: datetime) -> str | None:
    """None when ``cutoff`` can be a test cut-off, else the reason it cannot."""
    try:
        rows = split_rows(labelled, config.split, last_cutoff=cutoff)
    except ValueError as exc:
        return str(exc)
    for name in ("train", "valid"):
        part = rows[rows["split"] == name]
        positives = int(part["label"].sum())
        if part.empty or positives == 0 or positives == len(part):
            return f"the {name} rows before it ({len(part)}) hold a single class"
    train_positives = int(rows.loc[rows["split"] == "train", "label"].sum())
    if train_positives < config.min_positives:
        return f"only {train_positives} positive(s) in its training rows (min_positives {config.min_positives})"
    return None


def choose_cutoffs(labelled: pd.DataFrame, train_config: TrainConfig, config: CompareConfig) -> tuple[list, list[str]]:
    """The backtest cut-offs (oldest first) and notes on the ones left out."""
    available = sorted(pd.to_datetime(labelled["as_of"]).unique())
    notes = []
    if config.backtest.cutoffs:
        wanted = [pd.Timestamp(c) for c in config.backtest.cutoffs]
        unknown = [c for c in wanted if c not in set(available)]
        if unknown:
            raise ValueError(
                f"backtest.cutoffs {[f'{c:%Y-%m-%d}' for c in unknown]} are not labelled cut-offs of the training "
                f"grid; labelled cut-offs: {[f'{c:%Y-%m-%d}' for c in available]}"
            )
        chosen = []
        for cutoff in wanted:
            reason = _has_history(labelled, train_config, cutoff)
            if reason:
                notes.append(f"{cutoff:%Y-%m-%d} left out: {reason}")
            else:
                chosen.append(cutoff)
        return sorted(chosen), notes
    chosen = []
    for cutoff in reversed(available):
        if len(chosen) == config.backtest.last_n:
            break
        if _has_history(labelled, train_config, cutoff) is None:
            chosen.append(cutoff)
    if len(chosen) < config.backtest.last_n:
        notes.append(f"only {len(chosen)} of the {config.backtest.last_n} cut-offs asked for have enough earlier "
                     "history (a train and a valid cut-off whose label windows closed before them)")
    return sorted(chosen), notes


def fit_and_score(
    frame: pd.DataFrame,
    features: list[str],
    raw: pd.DataFrame,
    contacts: pd.DataFrame | None,
    rules: RuleSet,
    train_config: TrainConfig,
    config: CompareConfig,
) -> pd.DataFrame:
    """Refit the learned model and points on the ``train``/``valid`` rows of ``frame``; score its ``test`` rows.

    ``frame`` holds keys, ``split``, ``label``, ``rule_score`` and the feature columns; ``raw`` the hand
    rules' uncapped points of the same rows (same order). Returns the test rows with every model's
    probability and 0-5 score (the columns of :data:`~propensity.pipelines.compare.core.DEFAULT_MODELS`).
    """
    # train's own fit routine, with the backtest's search setting (a search per cut-off is optional)
    learned = fit_learned(frame, features,
                          ModelConfig.from_section(train_config.model, tune=config.backtest.tune,
                                                   n_trials=config.backtest.n_trials),
                          train_config.calibration, rules=rules if train_config.rule_inputs else None)
    points = fit_points(frame, raw, contacts, rules, train_config.points)
    out = frame[[*KEYS, "split", "label", "rule_score"]].copy()
    out["probability"], out["learned_score"] = learned.probability, learned.score
    out["points_score"], out["points_probability"] = points.score, points.probability
    out["rule_probability"] = score_probability(frame, "rule_score")
    return out[(out["split"] == "test").to_numpy()].reset_index(drop=True)


def _rows_of(comparison, cutoff: pd.Timestamp) -> pd.DataFrame:
    summary = comparison.summary.drop(columns=["roc_auc_probability", "pr_auc_probability"])
    top = comparison.top_k.pivot(index="model", columns="k_percent", values=["lift", "precision", "recall"])
    top.columns = [f"{metric}_top{k:g}" for metric, k in top.columns]
    table = summary.merge(top, left_on="model", right_index=True, how="left")
    if not comparison.gaps.empty:
        gaps = comparison.gaps.drop(columns=["reference"])
        table = table.merge(gaps, on="model", how="left")
    return table.assign(as_of=cutoff)


def run_backtest(
    ws: Workspace,
    train_config: TrainConfig,
    config: CompareConfig = CompareConfig(),
    *,
    step: Callable[[str], None] = lambda _: None,
) -> Backtest:
    """Walk forward over past cut-offs of the training grid (see the module docstring)."""
    rules = load_rules(train_config.rules)
    data = EvaluationData.from_workspace(ws)
    step("backtest: label the grid")
    labelled, _ = labelled_rows(data, train_config)
    cutoffs, notes = choose_cutoffs(labelled, train_config, config)
    if not cutoffs:
        return Backtest(table=pd.DataFrame(), notes=notes or ["no cut-off has enough history for a backtest"])
    last = max(cutoffs)
    rows = labelled[labelled["as_of"] <= last].reset_index(drop=True)
    step(f"backtest: features and rule points for {len(rows):,} rows")
    spine = data.spine_table(rows, "_backtest_spine")
    feature_config = load_feature_config(train_config.features)
    features, columns, _ = feature_frame(data, spine, feature_config, horizon_days=train_config.horizon_days)
    if train_config.rule_inputs:  # as train builds its frame: the rules as an input
        history = data.contact_history if feature_config.attributes.values == "as_of" else None
        features, added = add_rule_inputs(features, data.events, spine, rules, data.contacts, history)
        columns = [*columns, *added]
    raw = raw_points(data, rows, rules, spine)
    contacts = rule_contacts_of(data, spine)  # each row's attribute version (with the attribute history)
    scored = score_frame(raw, contacts, rules)
    base = (rows[[*KEYS, "label", "label_end"]]
            .assign(rule_score=scored["rule_score"].to_numpy())
            .merge(features, on=KEYS, how="left", validate="one_to_one"))
    tables = []
    for cutoff in cutoffs:
        step(f"backtest: refit and score {cutoff:%Y-%m-%d}")
        split = split_rows(base, train_config.split, last_cutoff=cutoff)
        # split_rows keeps row order, so the raw points line up with the split rows by key
        keyed = split[KEYS].merge(raw, on=KEYS, how="left", validate="one_to_one")
        used = columns
        if train_config.expected_purchases:  # as train: BG/NBD per training cut-off of this refit
            split, fitted, _ = fit_expected_purchases(split, purchase_type_names(columns), train_config.horizon_days)
            used = [*columns, *(fitted.columns if fitted is not None else [])]
        test = fit_and_score(split, used, keyed, contacts, rules, train_config, config)
        if not 0 < test["label"].sum() < len(test):
            notes.append(f"{cutoff:%Y-%m-%d} left out: its contacts hold a single class")
            continue
        comparison = compare_scores(test, rules.bands, config, DEFAULT_MODELS, n_boot=config.backtest.n_boot)
        tables.append(_rows_of(comparison, cutoff))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if not table.empty:
        table = table[["as_of", *[c for c in table.columns if c != "as_of"]]]
    return Backtest(table=table, notes=notes)


def backtest_models(shown: list[str], table: pd.DataFrame) -> list[str]:
    """The held-out comparison's models, then each model only the backtest scored (the train config's
    learned model, refitted per cut-off, when no registered model was compared), so every verdict
    :func:`gap_stability` prints has its column in the table above it."""
    refitted = [] if table is None or table.empty else list(dict.fromkeys(table["model"]))
    return list(dict.fromkeys([*shown, *refitted]))


def gap_stability(table: pd.DataFrame, reference: str = "rules") -> list[str]:
    """One sentence per model: is its ROC-AUC gap to ``reference`` the same over the backtest cut-offs?

    "Stable" here means every cut-off's paired 95% interval lies on the same side of 0.
    """
    sentences = []
    if table is None or table.empty or "roc_auc_gap" not in table:
        return sentences
    for model, rows in table[table["model"] != reference].groupby("model", sort=False):
        n = len(rows)
        gaps = rows["roc_auc_gap"]
        spread = f"ROC-AUC gap {gaps.min():+.3f} to {gaps.max():+.3f}"
        if (rows["roc_auc_gap_low"] > 0).all():
            verdict = f"beat the {reference} at all {n} cut-offs (paired 95% interval above 0 each time)"
        elif (rows["roc_auc_gap_high"] < 0).all():
            verdict = f"lost to the {reference} at all {n} cut-offs (paired 95% interval below 0 each time)"
        else:
            # which side each clear gap falls on: "a clear gap at 2 of 3" read as a win when both were losses
            above = int((rows["roc_auc_gap_low"] > 0).sum())
            below = int((rows["roc_auc_gap_high"] < 0).sum())
            verdict = (f"no stable difference from the {reference}: above them at {above} of {n} cut-offs, "
                       f"below at {below}, no clear gap at {n - above - below} (paired 95% intervals)")
        sentences.append(f"{model}: {verdict}; {spread}")
    return sentences
