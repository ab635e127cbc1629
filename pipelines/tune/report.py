"""The proposal's report: the rules diff beside its evidence, opening with a plain verdict (pure).

``propensity tune`` writes it next to the proposal (``rules.proposed.md``): a reviewer sees what
the change does to a call list in calls and conversions, the test figures and the earlier
cut-offs it was judged on, and then exactly which lines of the rules file change.
"""

from __future__ import annotations

import math

import pandas as pd
from propensity.pipelines.compare.verdict import horizon_words, scores_verdict

__all__ = ["proposal_report"]


def proposal_report(result, k: float = 10.0) -> str:
    """Markdown: verdict, decision, evidence tables, and the diff (``result``: a ``TuneResult``)."""
    horizon_days = result.horizon_days
    test = result.scores[result.scores["split"] == "test"]
    verdict = scores_verdict(test["label"].to_numpy(), {"current": test["current"].to_numpy(),
                                                        "proposed": test["proposed"].to_numpy()},
                             "current", k=k, horizon_days=horizon_days)
    low, high = result.gain_interval
    lines = [f"# Proposed changes to the rules `{result.current_rules.name}`", ""]
    lines += [*verdict, ""]
    lines.append(f"**Decision:** {result.reason[:1].upper() + result.reason[1:]}.")
    if math.isfinite(result.gain) and math.isfinite(low):
        lines.append(f"Test ROC-AUC gain of the proposed rules over your rules: {result.gain:+.3f} "
                     f"(paired bootstrap interval {low:+.3f} to {high:+.3f}).")
    if math.isfinite(result.gap_closed):
        lines.append(f"They close {result.gap_closed:.0%} of the ROC-AUC gap between your rules and the learned "
                     "model.")
    lines += ["", f"Judged on {result.test_rows:,} test rows ({horizon_words(horizon_days)}); fitted on "
              f"{result.fit_rows:,} train and valid rows, without their labels.", ""]
    lines += ["## Evidence on the test cut-off", "", _markdown(result.backtest, digits=3), ""]
    lines += ["## Contacts at or above each band edge (test rows)", "", _markdown(result.volumes), ""]
    if len(result.walk_forward):
        lines += ["## Earlier cut-offs", "", _markdown(result.walk_forward, digits=3), ""]
    lines += ["## The change to the rules file", "", "```diff", result.diff.rstrip("\n") or "(no change)", "```", ""]
    return "\n".join(lines)


def _markdown(frame: pd.DataFrame, digits: int = 0) -> str:
    def cell(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if isinstance(value, pd.Timestamp):
            return f"{value:%Y-%m-%d}"
        if isinstance(value, bool | str):
            return str(value)
        if isinstance(value, int) or (isinstance(value, float) and (digits == 0 or float(value).is_integer()
                                                                    and abs(value) > 1)):
            return f"{round(value):,}"
        return f"{value:.{digits}f}"

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join(" --- " for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])
