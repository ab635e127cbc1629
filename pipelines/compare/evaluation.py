"""The I/O edge of `propensity compare`: from a workspace to the scored held-out rows.

The held-out rows are chosen by the training code's own rules (same grid, labels, time split and
purge as `propensity train`), so the comparison sees exactly the test cut-off the model never
trained on. Each model scores those rows point in time (features and rule points from events
with ``ts < as_of``):

* ``rules``: the hand rule file of the training config;
* ``learned``: a registered model (``champion`` by default) or any ``LearnedScorer``;
* ``learned_points``: the learned rule file (``<ws>/models/rules.learned.yaml``).

Rules and learned points are turned into probabilities by isotonic regression on the valid
split, as in training, so Brier and ECE compare like with like.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import ibis
import pandas as pd

from propensity.features.auto import resolve_feature_config
from propensity.features.build import (
    build_features,
    discover_event_types,
    feature_columns,
)
from propensity.features.config import FeatureConfig
from propensity.features.history import history_table
from propensity.features.store import Workspace
from propensity.pipelines.compare.config import CompareConfig
from propensity.pipelines.compare.core import Comparison, compare_scores
from propensity.pipelines.errors import WorkspaceError
from propensity.pipelines.rules.attributes_at import rule_contacts, rule_values_note
from propensity.pipelines.rules.config import RuleSet, load_rules
from propensity.pipelines.rules.score import activity_points, score_frame
from propensity.pipelines.training.as_trained import features_as_trained
from propensity.pipelines.training.config import SplitSection, TrainConfig
from propensity.pipelines.training.cutoffs import (
    label_rows,
    plan_rows,
    resolve_data_end,
    split_and_purge,
)
from propensity.pipelines.training.dataset import spine_frame
from propensity.pipelines.training.fit import score_probability
from propensity.pipelines.training.registry import load_model_context
from propensity.pipelines.training.registry import model_uri as resolve_model_uri
from propensity.pipelines.training.splits import assign_splits, purge_overlaps

__all__ = [
    "EvaluationData",
    "ModelSource",
    "compare_models",
    "feature_frame",
    "labelled_rows",
    "load_learned_scorer",
    "raw_points",
    "resolve_model_uri",
    "rule_contacts_of",
    "rule_scores",
    "split_rows",
]

KEYS = ["contact_id", "as_of"]
# the run parameters that decide which rows are test rows; a champion trained with other values
# may have trained on what we now call test
_SPLIT_PARAMS = ("grid.", "split.", "spine", "horizon_days", "recurring", "data_end", "qualifying_outcomes")


@dataclass(frozen=True)
class ModelSource:
    """Where the learned model came from (shown in the report)."""

    uri: str
    version: str | None = None
    run_id: str | None = None
    params: dict = field(default_factory=dict)


@dataclass
class EvaluationData:
    """The workspace's tables, read once."""

    con: ibis.BaseBackend
    events: ibis.Table
    contacts: ibis.Table | None
    contacts_frame: pd.DataFrame | None
    outcomes: pd.DataFrame
    contact_history: ibis.Table | None = None  # the attributes as of each cut-off (features/history.py)

    @classmethod
    def from_workspace(cls, ws: Workspace) -> EvaluationData:
        counts = ws.counts()
        if not counts.get("events"):
            raise ValueError(f"the workspace {ws.path} has no events: ingest events and outcomes first")
        con = ws.ibis_connection()
        contacts = con.table("contacts") if counts.get("contacts") else None
        return cls(con=con, events=con.table("events"), contacts=contacts,
                   contacts_frame=None if contacts is None else contacts.execute(), outcomes=ws.table("outcomes"),
                   contact_history=None if contacts is None else history_table(con))

    def spine_table(self, rows: pd.DataFrame, name: str = "_compare_spine") -> ibis.Table:
        return self.con.create_table(name, rows[KEYS], temp=True, overwrite=True)


def labelled_rows(data: EvaluationData, config: TrainConfig) -> tuple[pd.DataFrame, datetime]:
    """Every spine row of the training config that can be labelled: ``contact_id, as_of, label, label_end``.

    Spine, ``data_end`` default and labels come from the training code itself (``spine_frame``,
    ``resolve_data_end``, ``label_rows``), so compare and the backtest see the cut-offs train saw.
    """
    data_end = resolve_data_end(data.con, config.data_end)
    spine = spine_frame(data.con, config, data.events, data.contacts)
    return label_rows(spine, data.outcomes, config, data_end), data_end.value


def split_rows(labelled: pd.DataFrame, split: SplitSection, *, last_cutoff: datetime | None = None) -> pd.DataFrame:
    """The rows with their ``split`` as training assigns it, overlapping cut-offs purged.

    With ``last_cutoff`` (the backtest), that cut-off is the test cut-off and every other row
    must have had its label window closed by then: a label known only after ``last_cutoff`` is
    the future. (Purging overlaps is not enough: it only looks at contacts that reappear at
    the test cut-off, and cohort data such as OULAD has a new contact per enrolment.)
    """
    rows = labelled
    if last_cutoff is not None:
        cutoff = pd.Timestamp(last_cutoff)
        rows = rows[(rows["as_of"] == cutoff) | (rows["label_end"] <= cutoff)]
    rows = rows.reset_index(drop=True)
    if last_cutoff is None:
        assigned, keep = split_and_purge(rows, split)  # exactly the training split
    else:
        if split.valid_fraction is not None:
            assigned = assign_splits(rows, test_from=last_cutoff, valid_fraction=split.valid_fraction)
        else:
            # fixed split dates cannot move with the cut-off: count cut-offs back from it instead
            assigned = assign_splits(rows, valid_cutoffs=split.valid_cutoffs, test_cutoffs=1)
        keep = purge_overlaps(rows, assigned)
    return rows.assign(split=assigned)[keep.to_numpy()].reset_index(drop=True)


def raw_points(data: EvaluationData, rows: pd.DataFrame, rules: RuleSet, spine: ibis.Table) -> pd.DataFrame:
    """Uncapped points per activity of ``rules`` for ``rows`` (same order; see ``activity_points``)."""
    raw = activity_points(data.events, spine, rules).execute()
    raw["as_of"] = pd.to_datetime(raw["as_of"]).astype("datetime64[us]")
    return rows[KEYS].merge(raw, on=KEYS, how="left", validate="one_to_one")


def rule_contacts_of(data: EvaluationData, spine: ibis.Table) -> pd.DataFrame | None:
    """The contacts the rule score of ``spine``'s rows reads: each row's version with the attribute
    history, else the latest (``rules/attributes_at.py``)."""
    return rule_contacts(data.contacts_frame, data.contact_history, spine)


def rule_scores(data: EvaluationData, rows: pd.DataFrame, rules: RuleSet, spine: ibis.Table) -> pd.DataFrame:
    """``score_frame`` of ``rules`` on ``rows`` (same order), fit criteria as of each row's as_of."""
    return score_frame(raw_points(data, rows, rules, spine), rule_contacts_of(data, spine), rules)


def load_learned_scorer(ws: Workspace, config: TrainConfig, model: str, model_name: str):
    """The ``LearnedScorer`` behind a registered model, and where it came from; (None, None) when
    the registry has no such model (e.g. only the points model was trained)."""
    try:
        found = load_model_context(ws, model, model_name, config.mlflow.tracking_uri)
    except WorkspaceError:
        return None, None
    return found.scorer, ModelSource(uri=found.uri, version=found.version, run_id=found.run_id, params=found.params)


def _other_versions(ws: Workspace, config: TrainConfig, model: str, model_name: str) -> str:
    """Versions that exist when the one asked for does not (``train`` registers without promoting
    a model that does not beat the rules), so the user can compare one of them on purpose."""
    from propensity.pipelines.training.registry import registered_versions

    versions = registered_versions(ws, model_name, config.mlflow.tracking_uri)
    if not versions or model in {str(v) for v in versions}:
        return ""
    return (f" (version{'s' if len(versions) > 1 else ''} {', '.join(map(str, versions[-5:]))} registered but not "
            f"{model!r}: `propensity compare --model {versions[-1]}` compares the newest)")


def _split_mismatch(config: TrainConfig, params: dict) -> list[str]:
    from propensity.pipelines.training.run_logging import flatten

    ours = flatten(config.model_dump(mode="json"))
    keys = sorted(k for k in set(ours) | set(params) if k.startswith(_SPLIT_PARAMS))
    return [f"{k}: model {params.get(k)!r}, now {ours.get(k)!r}" for k in keys if params and params.get(k) != ours.get(k)]


def compare_models(
    ws: Workspace,
    train_config: TrainConfig,
    config: CompareConfig = CompareConfig(),
    *,
    model: str = "champion",
    model_name: str | None = None,
    learned_rules: Path | None = None,
    scorer=None,
    source: ModelSource | None = None,
    step: Callable[[str], None] = lambda _: None,
) -> Comparison:
    """Rule vs learned vs learned points on the training config's test cut-off(s).

    Parameters
    ----------
    ws : Workspace
    train_config : TrainConfig
        Decides the spine, labels and the time split (the same rows `propensity train` tested on).
    config : CompareConfig
    model, model_name : str
        Which registered model is "learned" (default ``champion`` of the config's model name).
    learned_rules : Path, optional
        The learned points file; default ``<ws>/models/rules.learned.yaml``.
    scorer : LearnedScorer, optional
        Use this scorer instead of the registry (e.g. the one a training run just returned);
        ``source`` then says where it came from.
    step : callable
        Progress callback, called with a short label before each stage.
    """
    model_name = model_name or train_config.mlflow.model_name
    hand = load_rules(train_config.rules)
    learned_path = Path(learned_rules) if learned_rules else ws.layout.learned_rules
    if not learned_path.exists():
        raise FileNotFoundError(f"{learned_path}: no learned rules; run `propensity train` first or pass --learned-rules")
    points_rules = load_rules(learned_path)
    warnings: list[str] = []
    meta = {"rules": str(train_config.rules), "learned_rules": str(learned_path), "workspace": str(ws.path)}
    step("load the learned model")
    if scorer is None:
        scorer, source = load_learned_scorer(ws, train_config, model, model_name)
        if scorer is None:
            warnings.append(f"no registered model {resolve_model_uri(model, model_name)}: comparing the rules and "
                            "the learned points only" + _other_versions(ws, train_config, model, model_name))
        else:
            meta["learned_model"] = {"uri": source.uri, "version": source.version, "run_id": source.run_id}
            mismatch = _split_mismatch(train_config, source.params)
            if mismatch:
                warnings.append("the learned model was trained with another spine or split, so some of these "
                                "test rows may have been its training rows: " + "; ".join(mismatch))
    else:
        source = source or ModelSource(uri="in-memory scorer")
        meta["learned_model"] = {"uri": source.uri, "version": source.version, "run_id": source.run_id}

    step("label the cut-offs and split them as training did")
    data = EvaluationData.from_workspace(ws)
    values = None if data.contacts is None else rule_values_note(hand, data.contact_history)
    if values:  # the rule scores' fit criteria: as of each cut-off (the attribute history) or the latest
        meta["attribute_values"] = values
    # the very function training splits with: same data_end default, labels, split, purge and errors
    data_end = resolve_data_end(data.con, train_config.data_end)
    planned = plan_rows(spine_frame(data.con, train_config, data.events, data.contacts), data.outcomes,
                        train_config, data_end)
    rows = planned.rows[planned.rows["split"].isin(["valid", "test"])].reset_index(drop=True)
    meta["data_end"] = data_end.value.isoformat()
    meta["horizon_days"] = train_config.horizon_days  # the verdict says whose conversions ("next month's")
    meta["data_end_rule"] = data_end.describe()
    meta["cutoff_plan"] = planned.report.to_dict()
    past_end = [f for f in planned.report.dropped if f.dropped_by == "window_past_data_end"]
    if past_end:
        warnings.append(
            f"grid cut-off(s) {', '.join(f'{f.as_of:%Y-%m-%d}' for f in past_end)} left out: their "
            f"{train_config.horizon_days:g}-day label windows close after data_end {data_end.value:%Y-%m-%d %H:%M}; "
            f"a data_end of {min(f.keep_with_data_end for f in past_end):%Y-%m-%d %H:%M} would keep the first")
    warnings.extend(planned.report.notes)
    spine = data.spine_table(rows)

    step("score with the rules and the learned points")
    frame = rows[[*KEYS, "split", "label"]].copy()
    frame["rule_score"] = rule_scores(data, rows, hand, spine)["rule_score"].to_numpy()
    frame["points_score"] = rule_scores(data, rows, points_rules, spine)["rule_score"].to_numpy()
    # as train does (the one fit routine's calibration), so Brier and ECE match train's figures
    frame["rule_probability"] = score_probability(frame, "rule_score")
    frame["points_probability"] = score_probability(frame, "points_score")
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    models = {"rules": ("rule_probability", "rule_score"), "learned_points": ("points_probability", "points_score")}
    if scorer is not None:
        step("score with the learned model")
        test_spine = data.spine_table(test, "_compare_test_spine")
        features = features_as_trained(data.events, test_spine, scorer, data.contacts, data.contact_history).execute()
        features["as_of"] = pd.to_datetime(features["as_of"]).astype("datetime64[us]")
        features = test[KEYS].merge(features, on=KEYS, how="left", validate="one_to_one")
        scored = scorer.score(features)
        test["probability"] = scored["probability"].to_numpy()
        test["learned_score"] = scored["learned_score"].to_numpy()
        models = {"rules": models["rules"], "learned": ("probability", "learned_score"),
                  "learned_points": models["learned_points"]}
        if train_config.recurring:  # repeat purchases: a probabilistic baseline beside them
            models |= _repeat_purchase_baseline(test, features, scorer, train_config, warnings)
    step("compute the metrics")
    comparison = compare_scores(test, hand.bands, config, models, meta=meta)
    comparison.warnings[:0] = warnings
    return comparison


def _repeat_purchase_baseline(test: pd.DataFrame, features: pd.DataFrame, scorer, train_config: TrainConfig,
                              warnings: list[str]) -> dict[str, tuple[str, str]]:
    """BG/NBD on the test rows' purchase history (compare/repeat_purchase.py): ``{"bgnbd": columns}``,
    or nothing with a warning saying why (no purchase-like type, the extra missing, too few buyers)."""
    from propensity.pipelines.compare.repeat_purchase import bgnbd_scores, rfm_of

    monetary = list((scorer.feature_config or {}).get("monetary_types") or [])
    if not monetary:
        warnings.append("no BG/NBD baseline: the model's features have no purchase-like type (monetary_types)")
        return {}
    from propensity.features.build import safe_name

    try:
        probability, score, params = bgnbd_scores(rfm_of(features, safe_name(monetary[0])), train_config.horizon_days,
                                                  test["rule_score"].to_numpy())
    except (ImportError, ValueError) as exc:
        warnings.append(f"no BG/NBD baseline: {exc}")
        return {}
    test["bgnbd_probability"], test["bgnbd_score"] = probability, score
    warnings.append(f"bgnbd: BG/NBD (lifetimes) on the purchase history of {monetary[0]!r} before each cut-off, "
                    f"fitted on these rows (no labels), params {', '.join(f'{k}={v:.3g}' for k, v in params.items())}")
    return {"bgnbd": ("bgnbd_probability", "bgnbd_score")}


def feature_frame(
    data: EvaluationData, spine: ibis.Table, config: FeatureConfig, horizon_days: float | None = None
) -> tuple[pd.DataFrame, list[str], tuple[str, ...]]:
    """Features for the spine rows with the training feature config (types and `auto` choices as training makes them)."""
    event_types = config.event_types or discover_event_types(data.events, config)
    config, _ = resolve_feature_config(config, data.events, event_types, horizon_days=horizon_days)
    features = build_features(data.events, spine, config, contacts=data.contacts, event_types=event_types,
                              contact_history=data.contact_history).execute()
    features["as_of"] = pd.to_datetime(features["as_of"]).astype("datetime64[us]")
    return features, feature_columns(features), tuple(event_types)
