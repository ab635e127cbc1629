"""The monitor settings (``configs/monitor.yaml``), validated once into frozen models.

A file of its own, like ``compare.yaml``: how often rules and model are measured again and when
that raises an alert is the monitoring team's choice, not part of how the model was trained.
"""

from __future__ import annotations

import fnmatch
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from propensity.pipelines.config_files import load_yaml_config

__all__ = ["AlertsSection", "DriftSection", "MonitorConfig", "MonitorConfigError", "ScheduleSection",
           "load_monitor_config"]


class MonitorConfigError(ValueError):
    """A monitor config that does not validate; the message names the file and the keys."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScheduleSection(_Section):
    """Which cut-offs are measured: ``first``, ``first + step_days``, ... while their label window
    (the training config's horizon) has closed by ``data_end``."""

    # None: one step after the champion's test cut-off (the first cut-off it never saw labels of)
    first: datetime | None = None
    step_days: int = Field(default=7, gt=0)
    # None: the midnight after the latest event or outcome in the workspace
    data_end: datetime | None = None


class AlertsSection(_Section):
    """When a measurement becomes an alert. Thresholds are z-scores (standard errors) unless named
    otherwise; they are high on purpose, since every run tests many bands, rules and models."""

    # a model (or the rules) is below its reference when the two bootstrap intervals do not overlap;
    # PR-AUC is measured and plotted but not alerted on by default: it moves with the base rate,
    # and with a few dozen conversions per cut-off its percentile interval is unreliable
    metrics: tuple[Literal["roc_auc", "pr_auc"], ...] = ("roc_auc",)
    calibration_z: float = Field(default=4.0, gt=0)  # observed vs predicted conversions, overall and per band
    calibration_min_gap: float = Field(default=0.25, ge=0)  # ... and off by at least this share of the prediction
    band_z: float = Field(default=4.0, gt=0)  # a band's share of contacts or its conversion rate moved
    band_min_change: float = Field(default=0.05, ge=0)  # ... by at least this much (absolute)
    # ... and by this share of itself (a cold band going from 25% to 20% of contacts is a trend of
    # an ageing population; a hot band going from 8% to 15% changes what a sales team can call)
    band_min_relative: float = Field(default=0.25, ge=0)
    rule_z: float = Field(default=4.0, gt=0)  # a rule's odds ratio of conversion fell from its reference
    rule_min_conversions: int = Field(default=5, ge=1)  # rules with fewer converters (reference) are not judged
    webhook: bool = False  # also queue each new alert as a signed webhook in the outbox (or --notify)


class DriftSection(_Section):
    """Input drift between the champion's training rows and each cut-off."""

    psi_threshold: float = Field(default=0.25, gt=0)  # population stability index per feature
    bins: int = Field(default=10, ge=2)
    top_movers: int = Field(default=5, ge=1)
    unseen_share: float = Field(default=0.05, gt=0, le=1)  # share of a categorical feature's values unseen in training
    event_window_days: int = Field(default=28, gt=0)  # event types appeared/vanished in this window before the cut-off
    min_events: int = Field(default=20, ge=1)  # an event type "appears" with at least this many events in the window
    reference_rows: int = Field(default=20_000, ge=100)  # training rows sampled for the reference
    # features reported but never alerted on (fnmatch patterns): ages that grow with the calendar
    # by construction, so their distribution moves every week on any population that is not renewed
    ignore: tuple[str, ...] = ("tenure_days", "*__days_since_first")

    def ignored(self, feature: str) -> bool:
        return any(fnmatch.fnmatchcase(feature, pattern) for pattern in self.ignore)


class MonitorConfig(_Section):
    """How `propensity monitor` measures rules, champion and learned points over time."""

    schedule: ScheduleSection = ScheduleSection()
    n_boot: int = Field(default=200, ge=10)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    seed: int = 0
    top_k_percent: tuple[float, ...] = (10.0,)
    alerts: AlertsSection = AlertsSection()
    drift: DriftSection = DriftSection()

    def measurement_key(self) -> dict:
        """The settings a stored measurement depends on: a change of them recomputes the history."""
        return {"step_days": self.schedule.step_days, "first": None if self.schedule.first is None
                else self.schedule.first.isoformat(), "n_boot": self.n_boot, "alpha": self.alpha, "seed": self.seed,
                "top_k_percent": list(self.top_k_percent), "bins": self.drift.bins,
                "event_window_days": self.drift.event_window_days, "reference_rows": self.drift.reference_rows}


def load_monitor_config(path: str | Path | None) -> MonitorConfig:
    """Read and validate a monitor YAML (``None``: the defaults)."""
    if path is None:
        return MonitorConfig()
    return load_yaml_config(path, MonitorConfig, MonitorConfigError, not_found="monitor config not found",
                            invalid="invalid monitor config", empty_ok=True)
