"""One cut-off measured again (pure): the numbers a monitor history stores per cut-off.

Everything ranking- and calibration-related is :func:`propensity.pipelines.compare.core.compare_scores`
(the compare report's own code: ROC-AUC and PR-AUC with bootstrap intervals on each model's 0-5
score, ECE on its probability, top-k, conversion per band); this module only keeps what a time
series needs and adds two sums compare has no use for: the predicted conversions per band (so
observed vs predicted can be tested) and, per rule, the conversions of contacts it gave points to.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from propensity.pipelines.compare.config import CompareConfig
from propensity.pipelines.compare.core import compare_scores
from propensity.pipelines.compare.tables import band_table
from propensity.pipelines.rules.config import Band

__all__ = ["expected_roc_auc", "measure_cutoff", "measure_volumes", "rule_counts"]

_SUMMARY = ("n", "positives", "base_rate", "roc_auc", "roc_auc_low", "roc_auc_high", "pr_auc", "pr_auc_low",
            "pr_auc_high", "brier", "ece")


def _bands_of(score: np.ndarray, bands: Sequence[Band]) -> np.ndarray:
    # the banding of compare.tables.band_table (bands sorted by min_score, lowest first)
    edges = np.array([b.min_score for b in bands])
    return np.clip(np.searchsorted(edges, score, side="right") - 1, 0, len(bands) - 1)


def rule_counts(points: pd.DataFrame, labels: np.ndarray) -> list[dict]:
    """Per ``points__{rule}`` column: contacts it gave points to (non-zero), their conversions, and
    the same for everyone else: the 2x2 table of the rule's odds ratio."""
    labels = np.asarray(labels, dtype="int64")
    out = []
    for column in points.columns:
        holds = points[column].to_numpy(dtype="float64") != 0
        out.append({"rule": column.removeprefix("points__"), "holders": int(holds.sum()),
                    "holder_conversions": int(labels[holds].sum()), "others": int((~holds).sum()),
                    "other_conversions": int(labels[~holds].sum())})
    return out


def expected_roc_auc(probability: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC to expect from ``score`` if ``probability`` were each row's true chance (no labels).

    The idea of NannyML's confidence-based performance estimation (CBPE), written out because it
    is one sort: with independent labels ``y_i ~ Bernoulli(p_i)``, the expected number of ranked
    pairs (a converter above a non-converter, ties counting half) over the expected number of
    converter / non-converter pairs, ``i != j``. Only as good as the calibration it assumes.
    """
    p = np.asarray(probability, dtype="float64")
    values, group = np.unique(np.asarray(score, dtype="float64"), return_inverse=True)
    pos = np.bincount(group, weights=p, minlength=values.size)
    neg = np.bincount(group, weights=1 - p, minlength=values.size)
    self_pairs = np.bincount(group, weights=p * (1 - p), minlength=values.size)
    below = np.cumsum(neg) - neg
    ranked = (pos * below).sum() + 0.5 * (pos * neg - self_pairs).sum()
    pairs = p.sum() * (1 - p).sum() - self_pairs.sum()
    return float(ranked / pairs) if pairs > 0 else float("nan")


def measure_volumes(frame: pd.DataFrame, bands: Sequence[Band], scores: Mapping[str, str],
                    rule_points: pd.DataFrame | None = None) -> dict:
    """What an open cut-off (no labels yet) can say: contacts and share per band of each model's
    0-5 score (``scores``: model -> score column), and per rule how many contacts it gives points to."""
    n = len(frame)
    record: dict = {"n": int(n), "bands": {}, "rules": []}
    for model, column in scores.items():
        counts = np.bincount(_bands_of(frame[column].to_numpy(dtype="float64"), bands), minlength=len(bands))
        record["bands"][model] = [{"band": b.name, "min_score": b.min_score, "contacts": int(c),
                                   "share": float(c / n) if n else None} for b, c in zip(bands, counts, strict=True)]
    if rule_points is not None:
        record["rules"] = [{"rule": c.removeprefix("points__"), "holders": int((rule_points[c] != 0).sum()),
                            "others": int((rule_points[c] == 0).sum())} for c in rule_points.columns]
    return record


def measure_cutoff(frame: pd.DataFrame, bands: Sequence[Band], models: Mapping[str, tuple[str, str]], *,
                   top_k_percent: Sequence[float] = (10.0,), n_boot: int = 200, alpha: float = 0.05, seed: int = 0,
                   rule_points: pd.DataFrame | None = None) -> dict:
    """The record of one cut-off: per model its summary, top-k and bands; per rule its counts.

    ``frame``: one cut-off's rows with ``contact_id, label`` and each model's (probability, 0-5
    score) columns; ``rule_points``: the hand rules' ``points__*`` columns of the same rows.
    """
    settings = CompareConfig(top_k_percent=tuple(top_k_percent), n_boot=n_boot, alpha=alpha, seed=seed,
                             examples_per_cell=0)
    comparison = compare_scores(frame, bands, settings, models)
    labels = frame["label"].to_numpy(dtype="int64")
    summary = comparison.summary.set_index("model")
    record: dict = {"n": int(labels.size), "positives": int(labels.sum()), "models": {}, "bands": {},
                    "top_k": _clean(comparison.top_k.to_dict(orient="records")), "rules": []}
    for model, (probability, score) in models.items():
        p = frame[probability].to_numpy(dtype="float64")
        row = {key: summary.loc[model, key] for key in _SUMMARY}
        row |= {"predicted": float(p.sum()), "predicted_var": float((p * (1 - p)).sum())}
        record["models"][model] = _clean(row)
        table = band_table(labels, {model: frame[score].to_numpy(dtype="float64")}, bands)
        codes = _bands_of(frame[score].to_numpy(dtype="float64"), bands)
        predicted = np.bincount(codes, weights=p, minlength=len(bands))
        variance = np.bincount(codes, weights=p * (1 - p), minlength=len(bands))
        table = table.assign(predicted=predicted, predicted_var=variance)
        record["bands"][model] = _clean(table.drop(columns=["model"]).to_dict(orient="records"))
    if rule_points is not None:
        record["rules"] = rule_counts(rule_points, labels)
    return record


def _clean(value):
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
