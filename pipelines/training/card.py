"""The model card a registered version carries (``card.md`` beside its context files).

A page a person reads before trusting the scores: what was trained on what, how each model ranks
on the test split, and whether the calibration fitted on valid holds on the test period (the
shift, per test cut-off and where it misses most). Written from the training summary and the
metrics table only, so it says nothing that the run's ``summary.json`` does not.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["model_card"]


def _metric_rows(metrics: pd.DataFrame) -> list[str]:
    test = metrics[metrics["split"] == "test"]
    rows = ["| model | ROC-AUC | PR-AUC | Brier | ECE | lift top 10% |", "|---|---|---|---|---|---|"]
    for r in test.itertuples(index=False):
        rows.append(f"| {r.model} | {r.roc_auc:.4f} | {r.pr_auc:.4f} | {r.brier:.4f} | {r.ece:.4f} | {r.lift_top10:.2f} |")
    return rows


def _shift_rows(shift: dict) -> list[str]:
    rows = ["| rows of | rows | rate | mean probability | ECE |", "|---|---|---|---|---|"]
    for name in ("valid", "test"):
        if name in shift:
            s = shift[name]
            rows.append(f"| {name} | {s['rows']:,} | {s['rate']:.3f} | {s['mean_probability']:.3f} | {s['ece']:.4f} |")
    for c in shift.get("test_by_cutoff", []):
        rows.append(f"| test cut-off {c['as_of']} | {c['rows']:,} | {c['rate']:.3f} | {c['mean_probability']:.3f} "
                    f"| {c['ece']:.4f} |")
    return rows


def model_card(summary: dict, metrics: pd.DataFrame, *, version: str | None = None) -> str:
    """The card as Markdown, from a :class:`~propensity.pipelines.training.train.TrainResult`'s
    ``summary`` and ``metrics``."""
    splits = summary.get("splits", {})
    lines = [f"# Model card{f' (version {version})' if version else ''}", "",
             f"- data_end {summary.get('data_end')}; {summary.get('features')} features; "
             + "; ".join(f"{name} {s['rows']:,} rows, {s['positives']:,} positives, {s['cutoffs']} cut-offs"
                         for name, s in splits.items()), ""]
    lines += ["## Test split", "", *_metric_rows(metrics), ""]
    shift = summary.get("calibration_shift")
    if shift:
        intro = "The calibration is fitted on valid; test is later. Rate against mean probability per split and test cut-off:"
        lines += ["## Calibration on the next period", "", intro, "", *_shift_rows(shift), ""]
        if "shift" in shift:
            lines.append(f"Test ECE minus valid ECE: {shift['shift']:+.4f}.")
        gaps = shift.get("test_largest_gaps_by_account") or []
        if gaps:
            where = ("Where it misses most (test accounts with at least 100 rows; share of the gap = rows x "
                     "(rate - mean probability) / test rows):")
            lines += ["", where, "", "| account | rows | rate | mean probability | share of the gap |", "|---|---|---|---|---|"]
            lines += [f"| {g['account_id']} | {g['rows']:,} | {g['rate']:.3f} | {g['mean_probability']:.3f} "
                      f"| {g['share_of_gap']:+.4f} |" for g in gaps]
        lines.append("")
    return "\n".join(lines)
