"""Explain learned scores: per contact, in batch (top reasons) and globally.

Compute -> a data object (:class:`ScoreExplanation`) -> render (the CLI, a CRM column, a plot).
How log-odds become 0-5 points is in :mod:`propensity.pipelines.explain.attribution`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from propensity.pipelines.explain.attribution import (
    carry_to_points,
    feature_contributions,
)
from propensity.pipelines.explain.groups import (
    FeatureGroups,
    describe_group,
    group_features,
)
from propensity.pipelines.explain.spread import spread_over_event_types

__all__ = [
    "ScoreExplanation",
    "contact_table",
    "dependence",
    "explain_contacts",
    "global_importance",
    "reason_items",
    "top_reasons",
]

KEYS = ["contact_id", "as_of"]


@dataclass(frozen=True)
class ScoreExplanation:
    """SHAP explanations of learned scores, per group, in log-odds and in 0-5 points.

    Attributes
    ----------
    keys : pandas.DataFrame
        ``contact_id, as_of`` of each explained row (RangeIndex, like every frame here).
    score : numpy.ndarray
        The learned 0-5 score of each row.
    baseline : float
        The score at the model's average margin; ``score - baseline`` is what is explained.
    base_margin : float
        The model's expected log-odds (SHAP base value).
    groups : FeatureGroups
    logodds : pandas.DataFrame
        Rows x groups: SHAP values summed per group (log-odds); rows sum to ``margin - base``.
    points : pandas.DataFrame
        Rows x groups: the same carried onto 0-5; rows sum to ``score - baseline``.
    facts : pandas.DataFrame
        Rows x groups: the facts behind each group in words.
    feature_logodds : pandas.DataFrame
        Rows x model features: the SHAP values themselves.
    features : pandas.DataFrame
        Rows x model features: the values explained.
    """

    keys: pd.DataFrame
    score: np.ndarray
    baseline: float
    base_margin: float
    groups: FeatureGroups
    logodds: pd.DataFrame
    points: pd.DataFrame
    facts: pd.DataFrame
    feature_logodds: pd.DataFrame
    features: pd.DataFrame

    def __len__(self) -> int:
        return len(self.keys)

    def row_of(self, contact_id: str) -> int:
        """Position of ``contact_id`` (its first row)."""
        hits = np.flatnonzero(self.keys["contact_id"].astype(str).to_numpy() == str(contact_id))
        if hits.size == 0:
            raise KeyError(f"contact {contact_id!r} is not among the explained rows")
        return int(hits[0])


def explain_contacts(
    scorer,
    features: pd.DataFrame,
    *,
    method: str = "shap",
    chunk_size: int = 20_000,
    with_facts: bool = True,
) -> ScoreExplanation:
    """Explain the learned score of every row of ``features``.

    Parameters
    ----------
    scorer : LearnedScorer
        The learned model (e.g. ``Project(ws).model(...).scorer`` or ``train(...).scorer``).
    features : pandas.DataFrame
        ``contact_id, as_of`` and the model's features (as built by ``build_features`` with the
        model's feature config and event types).
    method : {"shap", "pred_contrib"}
        ``shap.TreeExplainer`` (default, for a few contacts) or LightGBM's ``pred_contrib``
        (the same values; use it for whole tables).
    chunk_size : int
        Rows per SHAP call.
    with_facts : bool
        Whether to write the facts in words (skip for global statistics on many rows).

    Returns
    -------
    ScoreExplanation
    """
    missing = [k for k in KEYS if k not in features.columns]
    if missing:
        raise ValueError(f"the feature frame lacks key columns {missing}")
    frame = features.reset_index(drop=True)
    groups = group_features(scorer.feature_names, scorer.event_types, getattr(scorer, "input_rules", None))
    contributions, base = feature_contributions(scorer, frame, method=method, chunk_size=chunk_size)
    # all__*/value__* shared over the event types they are made of (explain/spread.py)
    logodds, groups = spread_over_event_types(contributions, frame, groups)
    points, score, baseline = carry_to_points(scorer, logodds, base)
    if with_facts:
        facts = pd.DataFrame(
            [[describe_group(g, groups.kinds[g], row) for g in groups.order] for _, row in frame.iterrows()],
            columns=list(groups.order), index=frame.index,
        )
    else:
        facts = pd.DataFrame(index=frame.index, columns=list(groups.order), dtype="object")
    return ScoreExplanation(
        keys=frame[KEYS].copy(), score=score, baseline=baseline, base_margin=base, groups=groups,
        logodds=logodds, points=points, facts=facts, feature_logodds=contributions,
        features=frame[scorer.feature_names].copy(),
    )


def contact_table(explanation: ScoreExplanation, row: int = 0, *, min_points: float = 0.0) -> pd.DataFrame:
    """One contact's explanation, largest effect first.

    Columns ``group, kind, facts, logodds, points``; groups whose ``|points|`` is below
    ``min_points`` are left out (their sum is in the last row, ``other``, so the points column
    still adds up to ``score - baseline``).
    """
    table = pd.DataFrame({
        "group": list(explanation.groups.order),
        "kind": [explanation.groups.kinds[g] for g in explanation.groups.order],
        "facts": explanation.facts.iloc[row].to_numpy(),
        "logodds": explanation.logodds.iloc[row].to_numpy(dtype="float64"),
        "points": explanation.points.iloc[row].to_numpy(dtype="float64"),
    })
    table = table.iloc[np.argsort(-np.abs(table["points"].to_numpy()), kind="stable")].reset_index(drop=True)
    small = table["points"].abs() < min_points
    if min_points > 0 and small.any():
        other = pd.DataFrame([{"group": "other", "kind": "", "facts": f"{int(small.sum())} smaller groups",
                               "logodds": table.loc[small, "logodds"].sum(), "points": table.loc[small, "points"].sum()}])
        table = pd.concat([table[~small], other], ignore_index=True)
    return table


def reason_items(explanation: ScoreExplanation, n: int = 3, *, positive_only: bool = False) -> list[dict]:
    """The first row's :func:`top_reasons` as ``[{"reason", "points"}, ...]`` (what the service
    returns), stopping at the first empty slot."""
    row = top_reasons(explanation, n, positive_only=positive_only).iloc[0]
    out = []
    for k in range(1, n + 1):
        text = row.get(f"reason_{k}")
        if text is None or pd.isna(text):
            break
        out.append({"reason": str(text), "points": float(row[f"reason_{k}_points"])})
    return out


def top_reasons(explanation: ScoreExplanation, n: int = 3, *, positive_only: bool = False) -> pd.DataFrame:
    """The ``n`` strongest reasons per contact, as columns ready for a CRM field.

    Columns: ``contact_id, as_of, learned_score, baseline``, then ``reason_1, reason_1_points, ...``
    (``reason_k`` is the group's facts in words, ``reason_k_points`` its signed 0-5 points;
    empty when a contact has fewer groups). ``positive_only`` keeps only reasons that raise the
    score (what a rep asks: "why is this contact hot?").
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    points = explanation.points.to_numpy(dtype="float64")
    ranked_on = np.where(points > 0, points, -np.inf) if positive_only else np.abs(points)
    order = np.argsort(-ranked_on, axis=1, kind="stable")[:, :n]
    names = np.array(explanation.groups.order, dtype=object)
    facts = explanation.facts.to_numpy(dtype=object)
    out = explanation.keys.copy()
    out["learned_score"] = explanation.score
    out["baseline"] = explanation.baseline
    rows = np.arange(len(points))
    records: dict[int, pd.Series] = {}

    def words(r: int, c: int) -> str:
        # facts are written only for the cells shown when the explanation was made without them
        if not pd.isna(facts[r, c]):
            return facts[r, c]
        if r not in records:
            records[r] = explanation.features.iloc[r]
        return describe_group(names[c], explanation.groups.kinds[names[c]], records[r])

    for k in range(min(n, points.shape[1])):
        column = order[:, k]
        chosen = points[rows, column]
        usable = np.isfinite(ranked_on[rows, column])
        text = [words(r, c) if ok else None for r, c, ok in zip(rows, column, usable)]
        out[f"reason_{k + 1}"] = text
        out[f"reason_{k + 1}_points"] = np.where(usable, chosen, np.nan)
    return out


def global_importance(explanation: ScoreExplanation) -> pd.DataFrame:
    """Mean ``|SHAP|`` per group over the explained rows, in log-odds and in 0-5 points.

    Columns ``group, kind, mean_abs_logodds, mean_abs_points, mean_points, share`` (share of the
    total mean ``|log-odds|``), largest first.
    """
    logodds = explanation.logodds.abs().mean()
    table = pd.DataFrame({
        "group": logodds.index,
        "kind": [explanation.groups.kinds[g] for g in logodds.index],
        "mean_abs_logodds": logodds.to_numpy(),
        "mean_abs_points": explanation.points.abs().mean().to_numpy(),
        "mean_points": explanation.points.mean().to_numpy(),
    })
    total = table["mean_abs_logodds"].sum()
    table["share"] = table["mean_abs_logodds"] / total if total > 0 else 0.0
    return table.sort_values("mean_abs_logodds", ascending=False, kind="stable").reset_index(drop=True)


def dependence(explanation: ScoreExplanation, features: list[str] | None = None, *, top: int = 4) -> pd.DataFrame:
    """How the score depends on the most important features: one row per (feature, contact).

    Parameters
    ----------
    explanation : ScoreExplanation
    features : list of str, optional
        Model features to show; default the ``top`` features by mean ``|SHAP|``.
    top : int

    Returns
    -------
    pandas.DataFrame
        Long format: ``feature, group, value`` (numeric features as float, categories as text),
        ``logodds`` (the feature's SHAP value), ``points`` (the same on 0-5, with the row's
        secant slope, see :mod:`propensity.pipelines.explain.attribution`) and ``learned_score``.
    """
    shap_values = explanation.feature_logodds
    if features is None:
        features = shap_values.abs().mean().sort_values(ascending=False, kind="stable").index[:top].tolist()
    unknown = [f for f in features if f not in shap_values.columns]
    if unknown:
        raise KeyError(f"not model features: {unknown}")
    total = explanation.logodds.sum(axis=1).to_numpy()
    delta = explanation.score - explanation.baseline
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(np.abs(total) > 1e-12, delta / total, 0.0)
    parts = []
    for feature in features:
        values = explanation.features[feature]
        numeric = pd.api.types.is_numeric_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype)
        parts.append(pd.DataFrame({
            "feature": feature,
            "group": explanation.groups.of_feature[feature],
            "value": values.astype("float64") if numeric else values.astype("string"),
            "logodds": shap_values[feature].to_numpy(),
            "points": shap_values[feature].to_numpy() * slope,
            "learned_score": explanation.score,
        }))
    return pd.concat(parts, ignore_index=True)
