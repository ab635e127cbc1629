"""Assemble an honest training set: spine -> labels -> splits -> features + rule scores.

Labels are decided first (who can be labelled at all), so features are only computed for rows
that will be used. Features and rule points are built by the same point-in-time code that
scoring uses, so a model never sees a column it will not get at scoring time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import ibis
import pandas as pd

from propensity.features.attributes import AttributeChoice, resolve_attributes
from propensity.features.auto import resolve_feature_config
from propensity.features.build import (
    build_features,
    discover_event_types,
    feature_columns,
)
from propensity.features.config import FeatureConfig
from propensity.features.history import history_table, values_note
from propensity.features.spine import spine_grid
from propensity.pipelines.rules.attributes_at import rule_contacts, rule_values_note
from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.rules.score import activity_points, score_frame
from propensity.pipelines.training.config import TrainConfig
from propensity.pipelines.training.cutoffs import (
    CutoffReport,
    plan_rows,
    resolve_data_end,
)
from propensity.pipelines.training.expected_purchases import (
    ExpectedPurchases,
    fit_expected_purchases,
    purchase_type_names,
)
from propensity.pipelines.training.rule_inputs import add_rule_inputs
from propensity.pipelines.training.sampling import WEIGHT, sample_negatives

__all__ = ["TrainingSet", "assemble_training_set", "data_end_of", "spine_frame"]

KEYS = ["contact_id", "as_of"]


@dataclass
class TrainingSet:
    """The rows a model is trained, validated and tested on, and what made them."""

    frame: pd.DataFrame  # keys, split, label, label_end, rule_score, features...
    feature_columns: list[str]
    raw_points: pd.DataFrame  # keys + uncapped points__{activity} (for the points model)
    contacts: pd.DataFrame | None  # per (contact_id, as_of) row with the attribute history, else the latest
    event_types: tuple[str, ...]
    data_end: datetime
    purged: int = 0
    summary: dict = field(default_factory=dict)
    cutoffs: CutoffReport | None = None  # each cut-off's split, or the rule that dropped it
    feature_config: FeatureConfig | None = None  # as built: nothing left on `auto`
    feature_note: str | None = None  # what `auto` chose and why
    attributes: AttributeChoice | None = None  # the contacts columns used, and those the guard left out
    attribute_values: str | None = None  # whose values: as of each cut-off (the history) or the latest
    expected_purchases: ExpectedPurchases | None = None  # the BG/NBD fit the model stores (expected_purchases: true)
    expected_purchases_notes: list[str] = field(default_factory=list)

    def split(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame["split"] == name]


def data_end_of(con: ibis.BaseBackend) -> datetime:
    """The default end of observed data: the midnight after the day of the latest event or outcome
    (see ``cutoffs.default_data_end``)."""
    return resolve_data_end(con).value


def spine_frame(con: ibis.BaseBackend, config: TrainConfig, events, contacts) -> pd.DataFrame:
    """The training config's spine (its grid, or a stored spine) as sorted, unique ``contact_id, as_of``."""
    if config.grid is not None:
        spine = spine_grid(events, config.grid.first, config.grid.last, config.grid.step_days, contacts)
    else:
        spine = con.table(f"spine__{config.spine}")
    frame = spine.select("contact_id", "as_of").execute()
    frame["as_of"] = pd.to_datetime(frame["as_of"]).astype("datetime64[us]")
    return frame.drop_duplicates(KEYS).sort_values(KEYS, kind="stable").reset_index(drop=True)


def assemble_training_set(
    con: ibis.BaseBackend,
    config: TrainConfig,
    rules: RuleSet,
    feature_config: FeatureConfig,
    *,
    events: ibis.Table,
    contacts: ibis.Table | None,
    outcomes: pd.DataFrame,
) -> TrainingSet:
    """Build the labelled, time-split, purged training frame.

    Parameters
    ----------
    con : ibis backend holding ``events`` (and ``contacts``); a temporary spine table is made there.
    config : TrainConfig
    rules : RuleSet
        The hand rules: their score is a column (the baseline) and their raw points feed the
        learned points model.
    feature_config : FeatureConfig
    events, contacts : ibis tables
    outcomes : DataFrame with ``contact_id, ts`` (+ ``outcome``)
    """
    data_end = resolve_data_end(con, config.data_end, events=events, outcomes=outcomes)
    planned = plan_rows(spine_frame(con, config, events, contacts), outcomes, config, data_end,
                        min_positives=config.min_positives)
    labelled = planned.rows
    # At scale: drop most training negatives before the costly feature build; `weight` undoes it.
    labelled = sample_negatives(labelled, config.negative_sample_rate, seed=config.model.seed)

    spine_table = con.create_table("_training_spine", labelled[KEYS], temp=True, overwrite=True)
    event_types = feature_config.event_types or discover_event_types(events, feature_config)
    feature_config, feature_note = resolve_feature_config(feature_config, events, event_types,
                                                          horizon_days=config.horizon_days)
    # identifier-like contacts columns (email, CRM ids) are left out here, once, and recorded
    feature_config, attributes = resolve_attributes(feature_config, contacts)
    history = None if contacts is None else history_table(con)  # attributes as of each cut-off
    values = "; ".join(n for n in (values_note(feature_config, history),
                                   None if contacts is None else rule_values_note(rules, history)) if n) or None
    features = build_features(events, spine_table, feature_config, contacts=contacts, event_types=event_types,
                              contact_history=history).execute()
    raw = activity_points(events, spine_table, rules).execute()
    # the rule baseline's fit criteria (and the points model's, tune's) read each row's version too
    contacts_frame = None if contacts is None else rule_contacts(contacts.execute(), history, spine_table)

    for frame in (features, raw):
        frame["as_of"] = pd.to_datetime(frame["as_of"]).astype("datetime64[us]")
    raw = labelled[KEYS].merge(raw, on=KEYS, how="left", validate="one_to_one")
    scored = score_frame(raw, contacts_frame, rules)
    columns = feature_columns(features)
    if config.rule_inputs:  # the rules as an input (training/rule_inputs.py), by scoring's own expression
        features, added = add_rule_inputs(features, events, spine_table, rules, contacts,
                                          history if feature_config.attributes.values == "as_of" else None)
        columns = [*columns, *added]
    frame = (
        labelled[[*KEYS, "split", "label", "label_end", WEIGHT]]
        .merge(scored[[*KEYS, "rule_score", "points"]], on=KEYS, how="left", validate="one_to_one")
        .merge(features, on=KEYS, how="left", validate="one_to_one")
    )
    fitted, fit_notes = None, []
    if config.expected_purchases:  # BG/NBD per training cut-off, no labels (training/expected_purchases.py)
        frame, fitted, fit_notes = fit_expected_purchases(frame, purchase_type_names(columns), config.horizon_days)
        columns = [*columns, *(fitted.columns if fitted is not None else [])]
    summary = (
        frame.groupby("split", observed=True)
        .agg(rows=("label", "size"), positives=("label", "sum"), cutoffs=("as_of", "nunique"))
        .to_dict(orient="index")
    )
    return TrainingSet(
        frame=frame, feature_columns=columns, raw_points=raw, contacts=contacts_frame,
        event_types=tuple(event_types), data_end=data_end.value, purged=planned.purged_rows, summary=summary,
        cutoffs=planned.report, feature_config=feature_config, feature_note=feature_note, attributes=attributes,
        attribute_values=values, expected_purchases=fitted, expected_purchases_notes=fit_notes,
    )
