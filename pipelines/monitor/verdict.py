"""The monitor page's opening, in plain language (pure): where the scores stand, what changed, what to do.

Built like the compare report's verdict (``compare.verdict``): the call-list sentence is that
module's own, read from the latest cut-off's top-k rows, and models are named as people say them.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from propensity.pipelines.compare.verdict import calls_sentence, spoken, verdict_k
from propensity.pipelines.monitor.alerts import ACTIONS

__all__ = ["monitor_verdict"]

_PRIORITY = {"rule": 0, "performance": 1, "drift": 2, "calibration": 3, "band": 4}


def _day(stamp: str) -> str:
    return stamp[:10]


def _reached(record: Mapping, k: float) -> dict[str, float]:
    rows = [r for r in record.get("top_k", []) if r["k_percent"] == k]
    return {r["model"]: r["recall"] for r in rows if r.get("recall") is not None}


def monitor_verdict(result: Mapping) -> list[str]:
    """Sentences for a :meth:`MonitorResult.to_dict` (``meta``, ``reference``, ``cutoffs``, ``latest_alerts``)."""
    meta, reference, cutoffs = result["meta"], result["reference"] or {}, result["cutoffs"]
    horizon = meta.get("horizon_days")
    ref_day = _day(reference.get("as_of", meta.get("reference", "")))
    if not cutoffs:
        return [(f"No cut-off after the champion's test cut-off ({ref_day}) has a closed label window yet: "
                 "nothing measured.")]
    latest = cutoffs[-1]
    sentences = [(f"{len(cutoffs)} cut-off(s) measured since the champion's test cut-off ({ref_day}); the latest, "
                  f"{_day(latest['as_of'])}, scored {latest['n']:,} contacts of whom {latest['positives']:,} converted.")]
    if latest.get("top_k"):
        frame = pd.DataFrame(latest["top_k"])
        k = verdict_k(frame["k_percent"].unique())
        sentences += calls_sentence(frame, k, "rules", horizon)
        then, now = _reached(reference, k), _reached(latest, k)
        changes = [f"{spoken(m)} {round(100 * then[m])}% then, {round(100 * now[m])}% now"
                   for m in now if m in then]
        if changes:
            sentences.append(f"At the champion's test cut-off the top {k:g}% reached: " + "; ".join(changes) + ".")
    alerts = result.get("latest_alerts", [])
    if not alerts:
        sentences.append("No alert on the latest cut-off: nothing to do.")
        return sentences
    # the most telling first: a rule named, then ranking, drift, calibration, band volumes
    alerts = sorted(alerts, key=lambda a: _PRIORITY.get(a["kind"], len(_PRIORITY)))
    actions = list(dict.fromkeys(a["action"] for a in alerts))
    sentences.append(f"{len(alerts)} alert(s) on the latest cut-off. First: {alerts[0]['reason']}")
    sentences.append("What to do: " + "; ".join(ACTIONS[a] for a in actions) + ".")
    return sentences
