"""The monitor history as Prometheus gauges, for the service's ``/metrics``.

A custom collector (``prometheus_client``'s documented way to expose numbers kept elsewhere): each
scrape reads the history file of the series updated last, so the service never has to be told
that a weekly `propensity monitor` ran. A missing or unreadable history yields no monitor series
and one ``propensity_monitor_history_ok 0`` gauge instead of a failed scrape.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from propensity.pipelines.monitor.alerts import cutoff_alerts
from propensity.pipelines.monitor.config import MonitorConfig
from propensity.pipelines.monitor.history import latest_series, read_history

__all__ = ["MonitorCollector"]


class MonitorCollector(Collector):
    """Gauges of the latest measured cut-off: ranking and calibration per model, drift, alerts.

    ``config``: the thresholds alerts are derived with (default: the shipped defaults; the CLI
    passes the workspace's resolved monitor config).
    """

    def __init__(self, history_path: Path, config: MonitorConfig | None = None) -> None:
        self.history_path = Path(history_path)
        self.config = config or MonitorConfig()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ok = GaugeMetricFamily("propensity_monitor_history_ok", "1 when the monitor history was read.")
        try:
            series = latest_series(read_history(self.history_path)) if self.history_path.exists() else None
        except (OSError, ValueError):
            series = None
        if series is None or not series.get("cutoffs"):
            ok.add_metric([], 0.0)
            yield ok
            return
        ok.add_metric([], 1.0)
        yield ok
        latest = series["cutoffs"][max(series["cutoffs"])]
        when = GaugeMetricFamily("propensity_monitor_cutoff_timestamp_seconds",
                                 "The latest cut-off measured (its label window has closed), unix time.")
        when.add_metric([], pd.Timestamp(latest["as_of"]).timestamp())
        yield when
        metrics = {name: GaugeMetricFamily(f"propensity_monitor_{name}", text, labels=["model"]) for name, text in (
            ("roc_auc", "ROC-AUC on the latest cut-off, ranked by the 0-5 score."),
            ("roc_auc_reference", "ROC-AUC on the champion's test cut-off (the reference)."),
            ("pr_auc", "PR-AUC on the latest cut-off."),
            ("ece", "Expected calibration error on the latest cut-off."),
            ("conversions_observed", "Conversions in the latest cut-off's label window."),
            ("conversions_predicted", "Sum of the predicted probabilities on the latest cut-off."),
        )}
        reference = series.get("reference") or {}
        for model, row in latest.get("models", {}).items():
            values = {"roc_auc": row.get("roc_auc"), "pr_auc": row.get("pr_auc"), "ece": row.get("ece"),
                      "conversions_observed": row.get("positives"), "conversions_predicted": row.get("predicted"),
                      "roc_auc_reference": reference.get("models", {}).get(model, {}).get("roc_auc")}
            for name, value in values.items():
                if value is not None:
                    metrics[name].add_metric([model], float(value))
        yield from metrics.values()
        psi = GaugeMetricFamily("propensity_monitor_psi_max", "Largest population stability index of a watched feature.")
        drift = latest.get("drift") or {}
        if drift.get("psi_max") is not None:
            psi.add_metric([], float(drift["psi_max"]))
        yield psi
        alerts = GaugeMetricFamily("propensity_monitor_alerts",
                                   "Alerts on the latest closed cut-off and the open one after it, by kind and action.",
                                   labels=["kind", "action"])
        counts: dict[tuple[str, str], int] = {}
        judged = [latest] + ([series["open"]] if series.get("open") else [])
        for alert in [a for record in judged for a in cutoff_alerts(reference, record, self.config)] if reference else []:
            counts[(alert.kind, alert.action)] = counts.get((alert.kind, alert.action), 0) + 1
        for (kind, action), count in sorted(counts.items()):
            alerts.add_metric([kind, action], float(count))
        yield alerts
