"""When a proposal is offered: its test gain must be clear and earlier cut-offs must not disagree (pure).

Two checks, both needed:

* the paired bootstrap (the same resamples for both rule files, as ``compare`` and train's
  promotion use: :func:`propensity.pipelines.training.bootstrap.paired_bootstrap`) of the test
  ROC-AUC gain ``proposed - current`` has its ``1 - alpha`` interval above zero: a +0.0005 gain
  on a few thousand rows is noise, not an improvement;
* walk-forward: at each earlier cut-off of the training grid (its train/valid rows, whose label
  windows closed before the test cut-off) the proposed rules must not lose to the current ones
  on most cut-offs. Rules need no refit, so each cut-off is scored as it was. The proposal saw
  no labels, but it distils a model that was fitted on these rows: the check can only catch a
  proposal that is worse in the past, it does not prove it better (the test split does that).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from propensity.pipelines.training.bootstrap import interval, paired_bootstrap

__all__ = ["OfferDecision", "decide_offer", "walk_forward_gains"]


@dataclass(frozen=True)
class OfferDecision:
    offered: bool
    reason: str
    gain: float  # proposed - current test ROC-AUC
    interval: tuple[float, float]  # bootstrap interval of the gain
    walk_forward: pd.DataFrame  # as_of, rows, positives, current, proposed, gain


def walk_forward_gains(scores: pd.DataFrame, splits: tuple[str, ...] = ("train", "valid")) -> pd.DataFrame:
    """ROC-AUC of current vs proposed rules at each earlier cut-off (one class only: left out)."""
    rows = []
    past = scores[scores["split"].isin(splits)]
    for as_of, part in past.groupby("as_of", sort=True):
        y = part["label"].to_numpy(dtype="int64")
        if not 0 < y.sum() < len(y):
            continue
        current = roc_auc_score(y, part["current"].to_numpy(dtype="float64"))
        proposed = roc_auc_score(y, part["proposed"].to_numpy(dtype="float64"))
        rows.append({"as_of": as_of, "rows": len(y), "positives": int(y.sum()), "current": float(current),
                     "proposed": float(proposed), "gain": float(proposed - current)})
    return pd.DataFrame(rows, columns=["as_of", "rows", "positives", "current", "proposed", "gain"])


def decide_offer(scores: pd.DataFrame, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> OfferDecision:
    """Offer only when the gain's bootstrap interval on test lies above 0 and the past agrees.

    ``scores``: one row per (contact, cut-off) with ``split``, ``label``, ``as_of`` and the
    ``current`` and ``proposed`` rule scores.
    """
    test = scores[scores["split"] == "test"]
    y = test["label"].to_numpy(dtype="int64")
    if not 0 < y.sum() < len(y):
        return OfferDecision(offered=False, reason=(
            f"not offered, the test split holds a single class ({len(y)} rows, {int(y.sum())} positives): "
            "the proposal cannot be judged"), gain=float("nan"), interval=(float("nan"), float("nan")),
            walk_forward=walk_forward_gains(scores))
    current, proposed = test["current"].to_numpy(dtype="float64"), test["proposed"].to_numpy(dtype="float64")
    gain = float(roc_auc_score(y, proposed) - roc_auc_score(y, current))
    stats = paired_bootstrap(y, {"current": current, "proposed": proposed}, n_boot=n_boot, seed=seed)
    low, high = interval(stats["proposed"].roc_auc - stats["current"].roc_auc, alpha)
    past = walk_forward_gains(scores)
    losing = int((past["gain"] < 0).sum())
    judged = len(past)
    level = f"{1 - alpha:.0%}"
    test_text = f"test ROC-AUC gain {gain:+.4f} ({level} paired bootstrap interval {low:+.4f} to {high:+.4f})"
    past_text = (f"earlier cut-offs: the proposal loses on {losing} of {judged}" if judged
                 else "no earlier cut-off with both classes to check")
    clear = bool(low > 0)
    agrees = judged == 0 or losing * 2 < judged
    offered = clear and agrees
    if offered:
        reason = f"offered: {test_text}; {past_text}"
    elif not clear:
        reason = f"not offered, the gain on test is not clear of zero: {test_text}; {past_text}"
    else:
        reason = f"not offered, the earlier cut-offs disagree: {past_text}; {test_text}"
    return OfferDecision(offered=offered, reason=reason, gain=gain, interval=(low, high), walk_forward=past)
