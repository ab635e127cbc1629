"""Input drift (pure): the champion's training rows against a cut-off's rows.

* **Population stability index** per feature, over bins fixed on the training rows (deciles of a
  numeric feature, with a bin of its own for missing values; each training category of a
  categorical one, plus "unseen"). ``PSI = sum (a - e) ln(a / e)`` is the symmetrised
  Kullback-Leibler divergence, computed with :func:`scipy.stats.entropy` on shares floored at
  ``1e-4`` (an empty bin would make it infinite). The binning is ours: it must be stored with the
  history so a weekly run compares against the same bins without reading the training rows again.
* **Unseen categories**: the share of a categorical feature's values at the cut-off that the model
  never saw in training (LightGBM sends them down the "other" branch).
* **Event types that appeared or vanished**: counted in the events of a window before the cut-off,
  against the event types the model has columns for.

Evidently and NannyML both resolve with our stack but were not taken (docs/MONITOR.md says why):
they bring 80-90 packages for these three statistics, and their reports want the reference
frame at hand each time, where we keep a small stored profile.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import entropy

__all__ = ["drift_profile", "event_type_changes", "feature_drift", "psi"]

_FLOOR = 1e-4
MISSING, UNSEEN = "(missing)", "(unseen)"


def psi(actual: Sequence[float], expected: Sequence[float]) -> float:
    """Population stability index of two share vectors over the same bins."""
    a = np.maximum(np.asarray(actual, dtype="float64"), _FLOOR)
    e = np.maximum(np.asarray(expected, dtype="float64"), _FLOOR)
    a, e = a / a.sum(), e / e.sum()
    return float(entropy(a, e) + entropy(e, a))


def _numeric_bins(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin index per value: ``len(edges) + 1`` bins closed on the right, then one for missing."""
    inner = np.asarray(edges, dtype="float64")
    out = np.searchsorted(inner, values, side="left")
    out[~np.isfinite(values)] = inner.size + 1
    return out


def _numeric_shares(values: np.ndarray, edges: Sequence[float]) -> list[float]:
    counts = np.bincount(_numeric_bins(values, edges), minlength=len(edges) + 2)
    return (counts / max(values.size, 1)).tolist()


def _categorical_shares(values: pd.Series, categories: Sequence[str]) -> list[float]:
    text = values.astype("string")
    known = list(categories)
    shares = [float((text == c).sum()) for c in known]
    missing = float(text.isna().sum())
    unseen = float(len(text)) - sum(shares) - missing
    total = max(len(text), 1)
    return [s / total for s in [*shares, missing, unseen]]


def drift_profile(features: pd.DataFrame, numeric: Sequence[str], categorical: Mapping[str, Sequence],
                  bins: int = 10) -> dict:
    """The stored reference: per feature its bins and the training rows' share in each.

    ``numeric``: feature columns binned at the training rows' quantiles (ties merge bins, so a
    feature that is mostly 0 gets few); ``categorical``: column -> the categories the model knows.
    """
    out: dict = {"rows": len(features), "numeric": {}, "categorical": {}}
    quantiles = np.linspace(0, 1, bins + 1)[1:-1]
    for column in numeric:
        values = pd.to_numeric(features[column], errors="coerce").to_numpy(dtype="float64")
        finite = values[np.isfinite(values)]
        edges = np.unique(np.quantile(finite, quantiles)).tolist() if finite.size else []
        out["numeric"][column] = {"edges": edges, "shares": _numeric_shares(values, edges)}
    for column, known in categorical.items():
        cats = [str(c) for c in known]
        out["categorical"][column] = {"categories": cats, "shares": _categorical_shares(features[column], cats)}
    return out


def feature_drift(profile: Mapping, features: pd.DataFrame) -> pd.DataFrame:
    """``feature, kind, psi, unseen_share`` per profiled feature of ``features``, largest PSI first.

    A feature the profile has but ``features`` lacks is a data error, not drift: it raises.
    """
    missing = [c for c in [*profile["numeric"], *profile["categorical"]] if c not in features.columns]
    if missing:
        raise ValueError(f"the cut-off's features lack {missing[:5]} that the reference profile has")
    rows = []
    for column, spec in profile["numeric"].items():
        values = pd.to_numeric(features[column], errors="coerce").to_numpy(dtype="float64")
        rows.append({"feature": column, "kind": "numeric",
                     "psi": psi(_numeric_shares(values, spec["edges"]), spec["shares"]), "unseen_share": math.nan})
    for column, spec in profile["categorical"].items():
        shares = _categorical_shares(features[column], spec["categories"])
        rows.append({"feature": column, "kind": "categorical", "psi": psi(shares, spec["shares"]),
                     "unseen_share": shares[-1]})
    table = pd.DataFrame(rows, columns=["feature", "kind", "psi", "unseen_share"])
    return table.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True)


def event_type_changes(known: Sequence[str], recent: Mapping[str, int], min_events: int) -> tuple[list[str], list[str]]:
    """``(appeared, vanished)``: event types with at least ``min_events`` events in the recent window
    that the model has no columns for, and types it has columns for with none in the window."""
    known_set = set(known)
    appeared = sorted(t for t, n in recent.items() if t not in known_set and n >= min_events)
    vanished = sorted(t for t in known_set if recent.get(t, 0) == 0)
    return appeared, vanished
