"""The plain-language verdict a marketing-ops reader acts on, in the team's units (pure).

"Calling the top 10% by the learned model reaches 53% of next month's conversions, your rules
42%: 48 more conversions per 1,560 calls." Counts are whole numbers, shares whole percents, and
models are named as people say them. Every number is read from the comparison's own top-k table
(``compare.tables.top_k_table``), so the verdict and the tables below it cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from propensity.pipelines.compare.tables import top_k_table

__all__ = ["SPOKEN", "calls_sentence", "horizon_words", "plain_verdict", "spoken", "verdict_k"]

SPOKEN = {
    "rules": "your rules",
    "current": "your rules",
    "learned": "the learned model",
    "learned_points": "the learned points",
    "proposed": "the proposed rules",
}


def spoken(model: str) -> str:
    """A model's name as a team says it ("your rules", "the learned model", "the learned points")."""
    return SPOKEN.get(model, model.replace("_", " "))


def horizon_words(horizon_days: float | None) -> str:
    """Whose conversions: "next month's conversions" for a 28-31 day label window."""
    if horizon_days is None or not math.isfinite(horizon_days):
        return "the conversions that followed"
    if 28 <= horizon_days <= 31:
        return "next month's conversions"
    if horizon_days == 7:
        return "next week's conversions"
    return f"the conversions of the next {horizon_days:g} days"


def verdict_k(k_percent: Sequence[float]) -> float:
    """The list size the verdict speaks of: 10% when it was computed, else the first one."""
    ks = [float(k) for k in k_percent]
    return 10.0 if 10.0 in ks else ks[0]


def calls_sentence(top_k: pd.DataFrame, k: float, reference: str, horizon_days: float | None = None) -> list[str]:
    """The call-list sentences at top ``k``%: the best model against the reference, then the others.

    ``top_k``: :func:`~propensity.pipelines.compare.tables.top_k_table` rows (``model, k_percent,
    contacts, conversions, recall``).
    """
    rows = top_k[top_k["k_percent"] == float(k)].set_index("model")
    if rows.empty or reference not in rows.index:
        return []
    calls = int(rows["contacts"].iloc[0])
    # the leader by conversions reached; on a tie the reference (the team's own rules) leads
    leader = max(rows.index, key=lambda m: (round(rows.loc[m, "conversions"]), m == reference))
    other = reference if leader != reference else max(
        (m for m in rows.index if m != reference), key=lambda m: rows.loc[m, "conversions"], default=None)
    if other is None:
        return [f"Calling the top {k:g}% by {spoken(leader)} ({calls:,} calls) reaches "
                f"{_share(rows.loc[leader, 'recall'])} of {horizon_words(horizon_days)}."]
    more = round(rows.loc[leader, "conversions"]) - round(rows.loc[other, "conversions"])
    tail = (f"{more:,} more conversions per {calls:,} calls" if more > 0
            else f"the same number of conversions per {calls:,} calls")
    sentences = [f"Calling the top {k:g}% by {spoken(leader)} reaches {_share(rows.loc[leader, 'recall'])} of "
                 f"{horizon_words(horizon_days)}, {spoken(other)} {_share(rows.loc[other, 'recall'])}: {tail}."]
    for model in rows.index:
        if model in (leader, other):
            continue
        diff = round(rows.loc[model, "conversions"]) - round(rows.loc[reference, "conversions"])
        versus = (f"{abs(diff):,} {'more' if diff > 0 else 'fewer'} than {spoken(reference)}" if diff
                  else f"as many as {spoken(reference)}")
        verb = "reach" if spoken(model).endswith(("points", "rules")) else "reaches"
        sentences.append(f"{spoken(model).capitalize()} {verb} {_share(rows.loc[model, 'recall'])} "
                         f"({round(rows.loc[model, 'conversions']):,} conversions, {versus}).")
    return sentences


def plain_verdict(comparison, horizon_days: float | None = None) -> list[str]:
    """The verdict of a :class:`~propensity.pipelines.compare.core.Comparison`: call-list
    sentences at 10% (or the first k), then whether the whole ranking differs beyond chance."""
    if horizon_days is None:
        horizon_days = comparison.meta.get("horizon_days")
    k = verdict_k(comparison.top_k["k_percent"].unique())
    sentences = calls_sentence(comparison.top_k, k, comparison.reference, horizon_days)
    level = f"{round(100 * (1 - comparison.meta.get('alpha', 0.05)))}%"
    for gap in comparison.gaps.to_dict(orient="records"):
        low, high = gap["roc_auc_gap_low"], gap["roc_auc_gap_high"]
        if not (math.isfinite(low) and math.isfinite(high)):
            continue
        who, ref = spoken(gap["model"]).capitalize(), spoken(gap["reference"])
        if low > 0:
            sentences.append(f"{who} ranks the whole list better than {ref}, beyond chance on these contacts "
                             f"({level} interval of the ROC-AUC gap {low:+.3f} to {high:+.3f}).")
        elif high < 0:
            sentences.append(f"{who} ranks the whole list worse than {ref}, beyond chance on these contacts "
                             f"({level} interval of the ROC-AUC gap {low:+.3f} to {high:+.3f}).")
        else:
            sentences.append(f"Over the whole list, {spoken(gap['model'])} and {ref} could be equally good: "
                             f"the {level} interval of the ROC-AUC gap ({low:+.3f} to {high:+.3f}) includes no "
                             "difference.")
    return sentences


def scores_verdict(labels: np.ndarray, scores: Mapping[str, np.ndarray], reference: str, k: float = 10.0,
                   horizon_days: float | None = None) -> list[str]:
    """:func:`calls_sentence` straight from labels and scores (``tune``'s report uses it)."""
    return calls_sentence(top_k_table(np.asarray(labels), scores, [k]), k, reference, horizon_days)


def _share(recall: float) -> str:
    return "-" if not math.isfinite(recall) else f"{round(100 * recall)}%"
