"""Leakage guard: refuse to train on features that look derived from the outcome.

Two signals, both on the training split only:

- a feature that alone separates the classes almost perfectly (single-feature ROC-AUC above a
  threshold, either direction) is far more often a leak than a miracle;
- a feature whose name says it comes from an outcome column (``days_to_unregistration``,
  ``final_result``) is a leak whatever its AUC.

A feature can be exempted explicitly (``leakage.allow`` in the training config); the report says
which exemptions were used so the caller can log them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = [
    "LeakageConfig",
    "LeakageError",
    "LeakageReport",
    "check_leakage",
    "raise_for_leakage",
    "single_feature_auc",
]


@dataclass(frozen=True)
class LeakageConfig:
    """What counts as a suspected leak.

    Attributes
    ----------
    max_single_feature_auc : float
        A feature whose single-feature AUC (``max(AUC, 1 - AUC)``) on train is above this is a
        suspect.
    forbidden_patterns : tuple of str
        A feature whose name contains any of these (case-insensitive) is treated as derived from
        an outcome column.
    allow : tuple of str
        Features exempted explicitly, whatever they look like.
    min_category_rows : int
        Categories with fewer training rows than this are pooled into one before target
        encoding: otherwise an id-like column (one row per value) has an in-sample AUC of 1.
    """

    max_single_feature_auc: float = 0.98
    forbidden_patterns: tuple[str, ...] = ("outcome", "label", "unregist", "final_result", "converted", "churn")
    allow: tuple[str, ...] = ()
    min_category_rows: int = 20

    def __post_init__(self) -> None:
        if not 0.5 < self.max_single_feature_auc <= 1.0:
            raise ValueError("max_single_feature_auc must be in (0.5, 1]")
        if self.min_category_rows < 1:
            raise ValueError("min_category_rows must be at least 1")


@dataclass(frozen=True, eq=False)
class LeakageReport:
    """The outcome of :func:`check_leakage`.

    Attributes
    ----------
    suspects : pandas.DataFrame
        Columns ``feature``, ``auc``, ``reason`` (reasons joined by ``"; "``), highest AUC first;
        exempted features are not in it.
    allowed : list of str
        Exempted features that would otherwise have been suspects (log these overrides).
    aucs : pandas.Series
        The single-feature AUC of every feature, indexed by feature name.
    """

    suspects: pd.DataFrame
    allowed: list[str]
    aucs: pd.Series = field(default_factory=lambda: pd.Series(dtype="float64", name="auc"))

    @property
    def ok(self) -> bool:
        """Whether nothing blocks training."""
        return self.suspects.empty


class LeakageError(ValueError):
    """Training refused: some features look derived from the outcome."""

    def __init__(self, message: str, report: LeakageReport) -> None:
        super().__init__(message)
        self.report = report


def single_feature_auc(X: pd.DataFrame, y: Sequence[int] | np.ndarray | pd.Series, *,
                       min_category_rows: int = 20) -> pd.Series:
    """ROC-AUC of each feature on its own, in whichever direction is better.

    Parameters
    ----------
    X : pandas.DataFrame
        Features (the training split).
    y : array-like of {0, 1}
        Labels; both classes needed.
    min_category_rows : int
        Categories rarer than this are pooled before target encoding.

    Returns
    -------
    pandas.Series
        ``max(AUC, 1 - AUC)`` per feature (0.5 for a constant), indexed like ``X.columns``.

    Notes
    -----
    Missing values rank as one value below every other, so "missing" can separate the classes
    too. Text and categorical features are scored by their in-sample per-category mean label,
    which is what a leaking category looks like to a model; ties count half.
    """
    if X.columns.duplicated().any():
        raise ValueError(f"duplicated feature names: {sorted(set(X.columns[X.columns.duplicated()]))}")
    positive = _positive_mask(y, len(X))
    aucs = {name: _auc(_ranking_score(X[name], positive, min_category_rows), positive) for name in X.columns}
    return pd.Series(aucs, index=X.columns, name="auc", dtype="float64")


def check_leakage(X_train: pd.DataFrame, y_train: Sequence[int] | np.ndarray | pd.Series,
                  config: LeakageConfig | None = None) -> LeakageReport:
    """Find features that look derived from the outcome.

    Parameters
    ----------
    X_train : pandas.DataFrame
        Features of the training split.
    y_train : array-like of {0, 1}
        Its labels.
    config : LeakageConfig, optional
        Defaults to ``LeakageConfig()``.

    Returns
    -------
    LeakageReport
        Suspects (not exempted) and the exemptions used.
    """
    config = config or LeakageConfig()
    aucs = single_feature_auc(X_train, y_train, min_category_rows=config.min_category_rows)
    patterns = [p.lower() for p in config.forbidden_patterns if p]
    rows, allowed = [], []
    for name, auc in aucs.items():
        reasons = []
        if auc > config.max_single_feature_auc:
            reasons.append(f"single-feature AUC {_format_auc(auc, config.max_single_feature_auc)} "
                           f"> {config.max_single_feature_auc:g}")
        reasons += [f"name matches '{p}'" for p in patterns if p in str(name).lower()]
        if not reasons:
            continue
        if name in config.allow:
            allowed.append(name)
        else:
            rows.append({"feature": name, "auc": float(auc), "reason": "; ".join(reasons)})
    suspects = pd.DataFrame(rows, columns=["feature", "auc", "reason"]).astype({"auc": "float64"})
    suspects = suspects.sort_values("auc", ascending=False, kind="stable").reset_index(drop=True)
    return LeakageReport(suspects=suspects, allowed=allowed, aucs=aucs)


def raise_for_leakage(report: LeakageReport) -> None:
    """Raise :class:`LeakageError` naming every suspect, unless there are none.

    Parameters
    ----------
    report : LeakageReport

    Raises
    ------
    LeakageError
        When ``report.suspects`` is not empty; the message lists each feature with its AUC and
        reason and shows the config that exempts them.
    """
    if report.ok:
        return
    lines = [f"possible target leakage: {len(report.suspects)} feature(s) look derived from the outcome"]
    for row in report.suspects.itertuples():
        auc = "" if "AUC" in row.reason else f" (single-feature AUC {row.auc:.3f})"
        lines.append(f"  - {row.feature}: {row.reason}{auc}")
    names = ", ".join(str(f) for f in report.suspects["feature"])
    lines += [
        "Drop them from the features; or, if a feature really is known before as_of, exempt it in",
        "the training config:",
        "  leakage:",
        f"    allow: [{names}]",
    ]
    raise LeakageError("\n".join(lines), report)


def _positive_mask(y: Sequence[int] | np.ndarray | pd.Series, n_rows: int) -> np.ndarray:
    labels = np.asarray(y)
    if labels.ndim != 1 or len(labels) != n_rows:
        raise ValueError(f"y must be one label per row ({n_rows}), got shape {labels.shape}")
    if pd.isna(labels).any() or not np.isin(labels, [0, 1]).all():
        raise ValueError("y must hold only 0 and 1")
    positive = labels.astype(bool)
    if positive.all() or not positive.any():
        raise ValueError("y holds a single class: single-feature AUC needs both")
    return positive


def _ranking_score(column: pd.Series, positive: np.ndarray, min_category_rows: int) -> np.ndarray:
    """A float score per row whose ranking is what the feature alone can tell apart."""
    dtype = column.dtype
    if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        values = column.to_numpy(dtype="float64", na_value=np.nan)
    elif pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
        values = np.where(column.isna(), np.nan, column.to_numpy().view("int64").astype("float64"))
    else:
        return _target_encoded(column, positive, min_category_rows)
    return np.where(np.isnan(values), -np.inf, values)


def _target_encoded(column: pd.Series, positive: np.ndarray, min_category_rows: int) -> np.ndarray:
    codes, _ = pd.factorize(column, use_na_sentinel=False)  # missing is a category of its own
    counts = np.bincount(codes)
    rare = counts < min_category_rows
    pooled = np.where(rare[codes], len(counts), codes)
    totals = np.bincount(pooled, minlength=len(counts) + 1)
    hits = np.bincount(pooled, weights=positive, minlength=len(counts) + 1)
    means = np.divide(hits, totals, out=np.zeros_like(hits), where=totals > 0)
    return means[pooled]


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC with ties counted half, folded to ``max(AUC, 1 - AUC)``."""
    if score.min() == score.max():
        return 0.5
    negatives = np.sort(score[~positive])
    positives = np.sort(score[positive])  # sorted queries make searchsorted cache-friendly
    below = np.searchsorted(negatives, positives, side="left")
    tied = negatives[np.minimum(below, len(negatives) - 1)] == positives
    # the second search is only needed when a positive ties a negative (counts, flags)
    below_or_tied = np.searchsorted(negatives, positives, side="right") if tied.any() else below
    auc = (below.sum() + below_or_tied.sum()) / 2 / (len(positives) * len(negatives))
    return float(max(auc, 1.0 - auc))


def _format_auc(auc: float, threshold: float) -> str:
    """Three decimals, or as many as it takes to show the AUC is above the threshold."""
    for digits in (3, 4, 5, 6):
        text = f"{auc:.{digits}f}"
        if float(text) > threshold:
            return text
    return repr(float(auc))
