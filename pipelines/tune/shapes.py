"""Rule shapes and fit criteria fitted to one SHAP group (pure): the per-unit column a rule
contributes, the half-life / cap whose column best explains the group, and attribute bins.

Used by :func:`propensity.pipelines.tune.propose.propose_rules`; the method is described there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from propensity.features.build import safe_name
from propensity.pipelines.rules.config import Activity, FitCriterion
from propensity.pipelines.rules.rounding import readable_edge
from propensity.pipelines.rules.score import cap_values

__all__ = ["criterion_matches", "fit_criteria_for", "unit_capped"]


def unit_capped(raw: np.ndarray, cap: float | None) -> np.ndarray:
    """A unit rule's column with a per-unit cap: ``cap (1 - exp(-raw / cap))`` for raw >= 0."""
    return raw if cap is None else cap_values(raw, cap)  # the scoring engine's own cap


def _r2(y: np.ndarray, x: np.ndarray) -> float:
    """R^2 of a least-squares fit of ``y`` on ``[1, x]``."""
    design = np.column_stack([np.ones(len(y)), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    total = ((y - y.mean()) ** 2).sum()
    return float(1 - (residual ** 2).sum() / total) if total > 0 else 0.0


def _best_shape(y: np.ndarray, raw: pd.DataFrame, columns: list[str], quantiles) -> tuple[str, float | None, float]:
    """The (column, cap, R^2) among ``columns`` x caps that best explains ``y``."""
    best = (columns[0], None, -np.inf)
    for column in columns:
        values = raw[column].to_numpy(dtype="float64")
        positive = values[values > 0]
        # a cap below one event's worth (1 unit) would swallow the rule's points: raise it to 1
        caps = [None] + sorted({max(float(c), 1.0) for c in np.quantile(positive, quantiles)} if positive.size else set())
        for cap in caps:
            r2 = _r2(y, unit_capped(values, cap))
            if r2 > best[2] + 1e-12:
                best = (column, cap, r2)
    return best


def _shape_text(activity: Activity, cap: float | None) -> str:
    parts = [f"half-life {activity.half_life_days:g}d" if activity.half_life_days else "no decay"]
    if activity.expires_after_days:
        parts.append(f"expires {activity.expires_after_days:g}d")
    if cap is not None:
        parts.append(f"cap {cap:.3g}")
    return ", ".join(parts)


def _lstsq(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Slopes of ``y ~ 1 + x`` (a tiny ridge keeps collinear columns finite)."""
    if x.shape[1] == 0:
        return np.zeros(0)
    mean, sd = x.mean(axis=0), x.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    z = (x - mean) / sd
    gram = z.T @ z + 1e-6 * len(y) * np.eye(z.shape[1])
    return np.linalg.solve(gram, z.T @ (y - y.mean())) / sd


def fit_criteria_for(
    attribute: str, values: pd.Series, phi: np.ndarray, *, max_bins: int, min_share: float
) -> list[FitCriterion]:
    """New criteria for an attribute from a small regression tree of ``phi`` on it.

    Numbers become ``[min, max)`` ranges, text becomes ``in`` lists (categories ordered by their
    mean ``phi``, so a bin is a set of categories with similar effect). The bin holding the most
    rows is the reference and gets no criterion; missing values earn nothing. Points are set to
    1 here (placeholders; the caller fits them).
    """
    from sklearn.tree import DecisionTreeRegressor

    known = values.notna().to_numpy()
    if known.sum() < 10:
        return []
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric:
        x = values.to_numpy(dtype="float64", na_value=np.nan)[known]
    else:
        text = values.astype("string")[known]
        means = pd.Series(phi[known]).groupby(text.to_numpy()).mean().sort_values()
        rank = {c: i for i, c in enumerate(means.index)}
        x = text.map(rank).to_numpy(dtype="float64")
    tree = DecisionTreeRegressor(max_leaf_nodes=max_bins, min_samples_leaf=max(int(min_share * len(values)), 1),
                                 random_state=0).fit(x[:, None], phi[known])
    thresholds = sorted(t for t in tree.tree_.threshold if t != -2)  # -2 marks leaves
    if not thresholds:
        return []
    edges = [-np.inf, *thresholds, np.inf]
    counts = [int(((x > lo) & (x <= hi)).sum()) for lo, hi in zip(edges, edges[1:])]
    reference = int(np.argmax(counts))
    name = safe_name(attribute)
    out = []
    for b, (lo, hi) in enumerate(zip(edges, edges[1:])):
        if b == reference:
            continue
        if numeric:
            # the tree splits at midpoints, x <= t; criteria are [min, max) so nudge to the next value
            upper = float(x[x <= hi].max()) if np.isfinite(hi) else None
            lower = float(x[x > lo].min()) if np.isfinite(lo) else None
            bounds = {}
            if lower is not None:
                bounds["min"] = readable_edge(lower)
            if upper is not None:
                above = x[x > hi]
                bounds["max"] = readable_edge(float(above.min())) if above.size else None
                if bounds["max"] is None:
                    del bounds["max"]
            label = "_".join(f"{k}_{v:g}".replace(".", "p").replace("-", "m") for k, v in bounds.items())
            out.append(FitCriterion(name=f"{name}_{label}", attribute=attribute, points=1.0, **bounds))
        else:
            members = [c for c, i in rank.items() if lo < i <= hi]
            label = "_".join(safe_name(str(m)) for m in members[:3]) + ("_etc" if len(members) > 3 else "")
            typed = [_typed(m, values) for m in members]
            out.append(FitCriterion(name=f"{name}_{label}", attribute=attribute, points=1.0, **{"in": typed}))
    return out


def _typed(member: str, values: pd.Series):
    if pd.api.types.is_bool_dtype(values):
        return member == "True"
    return member


def criterion_matches(criterion: FitCriterion, values: pd.Series) -> np.ndarray:
    from propensity.pipelines.rules.score import (
        _criterion_mask,  # the engine's own matching, so tune agrees with scoring
    )

    return _criterion_mask(criterion, values).astype("float64")
