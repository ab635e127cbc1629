"""Backtest: current rules vs proposed rules vs the learned model on held-out rows (pure)."""

from __future__ import annotations

import difflib

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from propensity.pipelines.rules.config import RuleSet, dump_rules
from propensity.pipelines.training.metrics import lift_at, lift_key

__all__ = ["backtest_table", "band_volumes", "gap_closed", "rules_diff"]


def backtest_table(labels: np.ndarray, scores: dict[str, np.ndarray], *, top_fraction: float = 0.1) -> pd.DataFrame:
    """ROC-AUC, PR-AUC and lift in the top ``top_fraction`` per model on the same rows.

    Parameters
    ----------
    labels : array of 0/1
    scores : dict
        Model name -> score (higher = more likely; the 0-5 scores themselves, ties allowed).
    """
    y = np.asarray(labels, dtype="int64")
    both = 0 < y.sum() < len(y)
    rows = []
    for name, score in scores.items():
        s = np.asarray(score, dtype="float64")
        rows.append({
            "model": name,
            "roc_auc": float(roc_auc_score(y, s)) if both else np.nan,
            "pr_auc": float(average_precision_score(y, s)) if both else np.nan,
            lift_key(top_fraction): lift_at(y, s, top_fraction) if y.any() else np.nan,
            "n": len(y),
            "positives": int(y.sum()),
        })
    return pd.DataFrame(rows)


def band_volumes(rules: RuleSet, scores: dict[str, np.ndarray], points: dict[str, np.ndarray]) -> pd.DataFrame:
    """How many rows land at or above each band edge (and each raw-points threshold), per model.

    ``points`` holds the raw totals of the models that have them (the rules), for thresholds.
    """
    rows = []
    for band in rules.bands[1:]:
        row = {"edge": f"{band.name} (score >= {band.min_score:g})"}
        for name, score in scores.items():
            row[name] = int((np.asarray(score) >= band.min_score).sum())
        rows.append(row)
    for threshold, value in rules.thresholds.items():
        row = {"edge": f"{threshold} (points >= {value:g})"}
        for name in scores:
            row[name] = int((np.asarray(points[name]) >= value).sum()) if name in points else None
        rows.append(row)
    return pd.DataFrame(rows)


def gap_closed(current: float, proposed: float, learned: float) -> float:
    """Share of the current->learned gap the proposal closes (NaN when there is no gap)."""
    gap = learned - current
    return float((proposed - current) / gap) if gap > 0 else float("nan")


def rules_diff(current: RuleSet, proposed: RuleSet, current_name: str = "current", proposed_name: str = "proposed") -> str:
    """A unified diff of the two files as YAML."""
    return "".join(difflib.unified_diff(
        dump_rules(current).splitlines(keepends=True), dump_rules(proposed).splitlines(keepends=True),
        fromfile=current_name, tofile=proposed_name,
    ))
