"""Pure comparison tables: top-k capacity, conversion per band, band transitions, curves.

Frames and arrays in, frames and arrays out; nothing here reads files or draws.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve

from propensity.pipelines.rules.config import Band
from propensity.pipelines.training.metrics import lift_at, precision_recall_at

__all__ = [
    "band_table",
    "calibration_points",
    "gain_curve",
    "rank_correlation",
    "score_histogram",
    "top_k_table",
    "transition_matrix",
]


def top_k_table(y: np.ndarray, scores: Mapping[str, np.ndarray], k_percent: Sequence[float]) -> pd.DataFrame:
    """Precision, recall and lift when a team contacts the top ``k%`` of the list, per model.

    Ties at the cut count at their mean conversion rate (see
    :func:`propensity.pipelines.training.metrics.precision_recall_at`), so a 0-5 score whose bands tie
    is judged fairly and the answer does not depend on row order.

    Returns
    -------
    DataFrame
        ``model, k_percent, contacts, conversions, precision, recall, lift``; ``contacts`` is
        ``ceil(k% x n)`` and ``conversions`` the expected converters among them.
    """
    labels = np.asarray(y)
    rows = []
    for model, score in scores.items():
        for k in k_percent:
            fraction = k / 100.0
            precision, recall = precision_recall_at(labels, score, fraction)
            contacts = max(1, int(np.ceil(round(fraction * labels.size, 9))))
            rows.append({"model": model, "k_percent": float(k), "contacts": contacts,
                         "conversions": precision * contacts, "precision": precision, "recall": recall,
                         "lift": lift_at(labels, score, fraction)})
    return pd.DataFrame(rows)


def _bands_of(score: np.ndarray, bands: Sequence[Band]) -> pd.Categorical:
    edges = np.array([b.min_score for b in bands])
    names = [b.name for b in bands]
    index = np.searchsorted(edges, np.asarray(score, dtype="float64"), side="right") - 1
    return pd.Categorical.from_codes(np.clip(index, 0, len(names) - 1), categories=names, ordered=True)


def band_table(y: np.ndarray, scores: Mapping[str, np.ndarray], bands: Sequence[Band]) -> pd.DataFrame:
    """Contacts, share, conversions and conversion rate per band of each model's 0-5 score.

    Returns
    -------
    DataFrame
        ``model, band, min_score, contacts, share, conversions, conversion_rate`` with every
        band listed (empty ones with ``contacts`` 0 and a NaN rate), bands in their own order.
    """
    labels = np.asarray(y, dtype="float64")
    rows = []
    for model, score in scores.items():
        band = _bands_of(score, bands)
        frame = pd.DataFrame({"band": band, "label": labels})
        grouped = frame.groupby("band", observed=False)["label"].agg(["size", "sum"])
        for spec in bands:
            n, hits = int(grouped.loc[spec.name, "size"]), float(grouped.loc[spec.name, "sum"])
            rows.append({"model": model, "band": spec.name, "min_score": spec.min_score, "contacts": n,
                         "share": n / labels.size, "conversions": int(hits),
                         "conversion_rate": hits / n if n else float("nan")})
    return pd.DataFrame(rows)


def transition_matrix(
    from_score: np.ndarray,
    to_score: np.ndarray,
    y: np.ndarray,
    contact_ids: Sequence[str],
    bands: Sequence[Band],
    *,
    examples_per_cell: int = 3,
    seed: int = 0,
) -> dict:
    """Who moves from band i under one model to band j under another.

    Returns
    -------
    dict
        ``bands`` (names, in order), ``counts`` and ``conversions`` (lists of rows: ``[i][j]`` is
        from band i to band j), and ``examples``: ``{"from->to": [contact ids]}`` for non-empty
        cells, up to ``examples_per_cell`` ids drawn with ``seed`` and then sorted, so a report
        shows the same contacts every run.
    """
    names = [b.name for b in bands]
    source, target = _bands_of(from_score, bands), _bands_of(to_score, bands)
    labels = np.asarray(y, dtype="int64")
    ids = np.asarray(contact_ids, dtype=object)
    n = len(names)
    counts = np.zeros((n, n), dtype="int64")
    np.add.at(counts, (source.codes, target.codes), 1)
    conversions = np.zeros((n, n), dtype="int64")
    np.add.at(conversions, (source.codes, target.codes), labels)
    rng = np.random.default_rng(seed)
    examples: dict[str, list[str]] = {}
    if examples_per_cell:
        for i in range(n):
            for j in range(n):
                members = np.flatnonzero((source.codes == i) & (target.codes == j))
                if members.size:
                    take = rng.choice(members, size=min(examples_per_cell, members.size), replace=False)
                    examples[f"{names[i]}->{names[j]}"] = sorted(str(v) for v in ids[take])
    return {"bands": names, "counts": counts.tolist(), "conversions": conversions.tolist(), "examples": examples}


def rank_correlation(scores: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Spearman rank correlation between every pair of models' scores (ties get mean ranks)."""
    return pd.DataFrame({name: np.asarray(s, dtype="float64") for name, s in scores.items()}).corr(method="spearman")


def gain_curve(y: np.ndarray, score: np.ndarray, points: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative gain: share of all conversions captured when the top share of the list is contacted.

    Evaluated at ``points`` evenly spaced shares from 0 to 1 with the same tie rule as the
    top-k table (a band tied at the cut counts at its mean rate), so the curve and the table agree.
    """
    labels = np.asarray(y)
    shares = np.linspace(0.0, 1.0, points)
    captured = np.zeros(points)
    if labels.sum() == 0:
        return shares, np.full(points, np.nan)
    for i, share in enumerate(shares[1:], start=1):
        captured[i] = precision_recall_at(labels, score, float(share))[1]
    return shares, captured


def calibration_points(y: np.ndarray, probability: np.ndarray, n_bins: int = 10) -> dict[str, list[float]]:
    """Reliability diagram data: mean predicted vs observed rate in quantile bins (scikit-learn's)."""
    observed, predicted = calibration_curve(np.asarray(y), np.asarray(probability), n_bins=n_bins, strategy="quantile")
    return {"predicted": predicted.tolist(), "observed": observed.tolist()}


def score_histogram(y: np.ndarray, score: np.ndarray, edges: np.ndarray | None = None) -> dict[str, list]:
    """Counts of a 0-5 score in fixed bins, for converters and the rest (the distribution plot)."""
    edges = np.linspace(0.0, 5.0, 21) if edges is None else edges
    labels = np.asarray(y).astype(bool)
    values = np.asarray(score, dtype="float64")
    return {
        "edges": edges.tolist(),
        "converted": np.histogram(values[labels], bins=edges)[0].tolist(),
        "not_converted": np.histogram(values[~labels], bins=edges)[0].tolist(),
    }
