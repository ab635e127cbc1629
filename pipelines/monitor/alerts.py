"""Alerts (pure): a cut-off's record against the reference record, each with its reason and action.

The reference is the champion's own test cut-off, measured by the monitor the same way (so a
difference is a change of the world, not of the arithmetic). Every test is two-sided in what it
measures but only raises what needs acting on:

* ``performance``: a model's (or the rules') ROC-AUC / PR-AUC interval lies wholly below its
  reference interval (the two 1 - alpha bootstrap intervals do not overlap);
* ``calibration``: observed conversions differ from the sum of predicted probabilities (rescaled
  by the reference cut-off's observed/predicted ratio) by more than ``calibration_z`` standard
  errors and ``calibration_min_gap`` of the expectation, overall or in a band;
* ``band``: a band's share of contacts or its conversion rate moved (pooled two-proportion z);
* ``rule``: the odds ratio of conversion for contacts a rule gives points to fell (Woolf's
  log odds ratio with the Haldane +0.5, difference of two independent estimates);
* ``drift``: features above the PSI threshold (named, largest first), categorical values unseen in
  training, event types that appeared or vanished.

Hand-written: each is a closed-form z of two counts, which scipy and statsmodels offer only as
single-table tests, not as "this week against the reference".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from propensity.pipelines.compare.verdict import spoken
from propensity.pipelines.monitor.config import MonitorConfig

__all__ = ["ACTIONS", "Alert", "cutoff_alerts", "drift_alerts", "log_odds_ratio"]

ACTIONS = {
    "train": "run `propensity train` (the model no longer matches the data)",
    "tune": "run `propensity tune` for new rule points from the champion",
    "rules review": "review the rules (their points no longer mean what they did)",
}


@dataclass(frozen=True)
class Alert:
    """One thing that needs acting on."""

    kind: str  # performance | calibration | band | rule | drift
    subject: str  # the model, "model/band", the rule, the feature or event type
    as_of: str
    reason: str
    action: str  # a key of ACTIONS
    values: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Stable identity (the webhook's idempotency key): one alert per cut-off, kind and subject."""
        return f"{self.as_of}|{self.kind}|{self.subject}"

    def to_dict(self) -> dict:
        return asdict(self) | {"key": self.key, "todo": ACTIONS[self.action]}


def _finite(*values) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _model_action(model: str) -> str:
    return "rules review" if model == "rules" else "train"


def _two_proportion_z(x0: float, n0: float, x1: float, n1: float) -> float:
    if n0 <= 0 or n1 <= 0:
        return 0.0
    pooled = (x0 + x1) / (n0 + n1)
    var = pooled * (1 - pooled) * (1 / n0 + 1 / n1)
    return 0.0 if var <= 0 else (x1 / n1 - x0 / n0) / math.sqrt(var)


def log_odds_ratio(row: Mapping) -> tuple[float, float]:
    """Woolf's log odds ratio of a rule's 2x2 counts (Haldane +0.5) and its standard error."""
    a = row["holder_conversions"] + 0.5
    b = row["holders"] - row["holder_conversions"] + 0.5
    c = row["other_conversions"] + 0.5
    d = row["others"] - row["other_conversions"] + 0.5
    return math.log(a * d / (b * c)), math.sqrt(1 / a + 1 / b + 1 / c + 1 / d)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _performance(ref: Mapping, cur: Mapping, as_of: str, config: MonitorConfig) -> list[Alert]:
    out = []
    for model, now in cur["models"].items():
        then = ref["models"].get(model)
        if then is None:
            continue
        for metric in config.alerts.metrics:
            low_ref, high_now = then.get(f"{metric}_low"), now.get(f"{metric}_high")
            if _finite(low_ref, high_now) and high_now < low_ref:
                name = metric.replace("_", "-").upper().replace("-AUC", "-AUC")
                out.append(Alert(
                    "performance", model, as_of,
                    f"{spoken(model).capitalize()} ranks worse than at its reference cut-off: {name} "
                    f"{now[metric]:.3f} (interval {now[f'{metric}_low']:.3f}-{high_now:.3f}) against "
                    f"{then[metric]:.3f} ({low_ref:.3f}-{then[f'{metric}_high']:.3f}); the intervals do not overlap.",
                    _model_action(model), {"metric": metric, "value": now[metric], "reference": then[metric]}))
    return out


def _calibration_gap(now: Mapping, then: Mapping | None, observed: str, config: MonitorConfig) -> tuple | None:
    """``(z, expected)`` when observed vs predicted conversions are an alert, else None.

    The prediction is rescaled by the reference cut-off's own observed/predicted ratio (with its
    Poisson uncertainty in the variance): a calibrator fitted on one small valid cut-off is a bit
    off from the start, and only a change since the reference is news.
    """
    predicted, count = now["predicted"], now[observed]
    if predicted <= 0:
        return None
    ratio, ratio_var = 1.0, 0.0
    if then is not None and then["predicted"] > 0:
        ratio = (then[observed] + 0.5) / (then["predicted"] + 0.5)
        ratio_var = ratio**2 / (then[observed] + 0.5)
    expected = predicted * ratio
    variance = now["predicted_var"] * ratio + predicted**2 * ratio_var
    if variance <= 0:
        return None
    z = (count - expected) / math.sqrt(variance)
    if abs(z) > config.alerts.calibration_z and abs(count - expected) / expected > config.alerts.calibration_min_gap:
        return z, expected
    return None


def _calibration(ref: Mapping, cur: Mapping, as_of: str, config: MonitorConfig) -> list[Alert]:
    out = []
    for model, now in cur["models"].items():
        found = _calibration_gap(now, ref["models"].get(model), "positives", config)
        if found is not None:
            z, expected = found
            out.append(Alert(
                "calibration", model, as_of,
                f"{spoken(model).capitalize()} predicted {now['predicted']:,.0f} conversions, "
                f"{now['positives']:,} happened ({expected:,.0f} expected with the reference cut-off's ratio; "
                f"z {z:+.1f}): its probabilities are off.",
                _model_action(model), {"observed": now["positives"], "predicted": now["predicted"], "z": z}))
            continue
        before = {b["band"]: b for b in ref["bands"].get(model, [])}
        for band in cur["bands"].get(model, []):
            found = _calibration_gap(band, before.get(band["band"]), "conversions", config)
            if found is not None:
                z, expected = found
                out.append(Alert(
                    "calibration", f"{model}/{band['band']}", as_of,
                    f"In the {band['band']} band of {spoken(model)}, {band['predicted']:,.0f} conversions were "
                    f"predicted and {band['conversions']:,} happened ({expected:,.0f} expected with the reference "
                    f"cut-off's ratio; z {z:+.1f}).",
                    _model_action(model), {"observed": band["conversions"], "predicted": band["predicted"], "z": z}))
    return out


def _share_moved(x0: float, n0: float, x1: float, n1: float, config: MonitorConfig) -> float | None:
    """The z of a share that moved enough to alert (beyond ``band_z``, by ``band_min_change`` points
    and by ``band_min_relative`` of itself), else None."""
    if n0 <= 0 or n1 <= 0:
        return None
    share0, share1 = x0 / n0, x1 / n1
    z = _two_proportion_z(x0, n0, x1, n1)
    relative = abs(share1 - share0) / share0 if share0 > 0 else math.inf
    if (abs(z) > config.alerts.band_z and abs(share1 - share0) >= config.alerts.band_min_change
            and relative >= config.alerts.band_min_relative):
        return z
    return None


def _bands(ref: Mapping, cur: Mapping, as_of: str, config: MonitorConfig) -> list[Alert]:
    out = []
    limit = config.alerts.band_z
    for model, rows in cur["bands"].items():
        before = {b["band"]: b for b in ref["bands"].get(model, [])}
        n0, n1 = ref["n"], cur["n"]
        for band in rows:
            then = before.get(band["band"])
            if then is None:
                continue
            z = _share_moved(then["contacts"], n0, band["contacts"], n1, config)
            if z is not None:
                out.append(Alert(
                    "band", f"{model}/{band['band']}", as_of,
                    f"The {band['band']} band of {spoken(model)} holds {_pct(band['share'])} of contacts, "
                    f"{_pct(then['share'])} at the reference (z {z:+.1f}).",
                    _model_action(model), {"measure": "share", "value": band["share"], "reference": then["share"]}))
            if "conversions" in band and then["contacts"] and band["contacts"]:
                z = _two_proportion_z(then["conversions"], then["contacts"], band["conversions"], band["contacts"])
                rate0, rate1 = then["conversions"] / then["contacts"], band["conversions"] / band["contacts"]
                # a rate is judged relative to itself only: 2 points is a lot at a 1% base rate
                moved = abs(rate1 - rate0) / rate0 if rate0 > 0 else math.inf
                if abs(z) > limit and moved >= config.alerts.band_min_relative:
                    out.append(Alert(
                        "band", f"{model}/{band['band']}:conversion", as_of,
                        f"Contacts in the {band['band']} band of {spoken(model)} convert at {_pct(rate1)}, "
                        f"{_pct(rate0)} at the reference (z {z:+.1f}).",
                        _model_action(model), {"measure": "conversion_rate", "value": rate1, "reference": rate0}))
    return out


def _rules(ref: Mapping, cur: Mapping, as_of: str, config: MonitorConfig) -> list[Alert]:
    out = []
    before = {r["rule"]: r for r in ref.get("rules", [])}
    for row in cur.get("rules", []):
        then = before.get(row["rule"])
        if then is None:
            continue
        n0, n1 = then["holders"] + then["others"], row["holders"] + row["others"]
        z = _share_moved(then["holders"], n0, row["holders"], n1, config)
        share0, share1 = then["holders"] / max(n0, 1), row["holders"] / max(n1, 1)
        if z is not None:
            out.append(Alert(
                "rule", f"{row['rule']}:coverage", as_of,
                f"The rule {row['rule']!r} gives points to {_pct(share1)} of contacts, {_pct(share0)} at the "
                f"reference (z {z:+.1f}): the events it counts changed in volume, so its points may no longer "
                "mean what they did.",
                "rules review", {"measure": "coverage", "value": share1, "reference": share0, "z": z}))
        if ("holder_conversions" not in row or then["holder_conversions"] < config.alerts.rule_min_conversions
                or not row["holders"]):
            continue
        lor0, se0 = log_odds_ratio(then)
        lor1, se1 = log_odds_ratio(row)
        z = (lor0 - lor1) / math.sqrt(se0**2 + se1**2)
        if z > config.alerts.rule_z:
            out.append(Alert(
                "rule", row["rule"], as_of,
                f"Contacts the rule {row['rule']!r} gives points to convert {math.exp(lor1):.1f}x the odds of "
                f"the others, {math.exp(lor0):.1f}x at the reference (z {z:.1f}): the event no longer "
                f"signals intent as it did ({row['holders']:,} contacts hold its points, "
                f"{then['holders']:,} then).",
                "rules review", {"odds_ratio": math.exp(lor1), "reference": math.exp(lor0), "z": z}))
    return out


def drift_alerts(drift: Mapping, as_of: str, config: MonitorConfig, reference: Mapping | None = None) -> list[Alert]:
    """Alerts from one cut-off's drift record (see :func:`propensity.pipelines.monitor.drift.feature_drift`).

    A feature drifts when its PSI against the training rows passes the threshold and has grown
    by more than the threshold since the reference cut-off: drift that was already there when the
    champion was judged on that cut-off (and promoted) is not news. Features matching
    ``drift.ignore`` are reported but never alert.
    """
    out = []
    features: Sequence[Mapping] = drift.get("features", [])
    before = {f["feature"]: f["psi"] or 0.0 for f in (reference or {}).get("features", [])}
    limit = config.drift.psi_threshold
    moved = [f for f in features if f["psi"] is not None and f["psi"] > limit
             and f["psi"] - before.get(f["feature"], 0.0) > limit and not config.drift.ignored(f["feature"])]
    if moved:
        named = ", ".join(f"{f['feature']} ({f['psi']:.2f})" for f in moved[:config.drift.top_movers])
        more = f" and {len(moved) - config.drift.top_movers} more" if len(moved) > config.drift.top_movers else ""
        out.append(Alert(
            "drift", "features", as_of,
            f"{len(moved)} feature(s) drifted beyond PSI {limit:g} from the champion's training rows "
            f"(and by more than that since its reference cut-off): {named}{more}.",
            "train", {"features": [f["feature"] for f in moved], "psi": [f["psi"] for f in moved]}))
    for f in features:
        share = f.get("unseen_share")
        if share is not None and share > config.drift.unseen_share:
            out.append(Alert(
                "drift", f"unseen:{f['feature']}", as_of,
                f"{_pct(share)} of the values of {f['feature']} were never seen in training.",
                "train", {"unseen_share": share}))
    for event_type in drift.get("appeared", []):
        count = drift.get("event_counts", {}).get(event_type, 0)
        out.append(Alert(
            "drift", f"appeared:{event_type}", as_of,
            f"A new event type {event_type!r} appeared ({count:,} events in the "
            f"{config.drift.event_window_days} days before the cut-off): no rule and no model column counts it.",
            "rules review", {"events": count}))
    for event_type in drift.get("vanished", []):
        out.append(Alert(
            "drift", f"vanished:{event_type}", as_of,
            f"The event type {event_type!r} vanished: none in the {config.drift.event_window_days} days "
            "before the cut-off, though the model uses it.",
            "rules review", {}))
    return out


def cutoff_alerts(reference: Mapping, current: Mapping, config: MonitorConfig) -> list[Alert]:
    """Every alert of ``current`` (one cut-off's record, with its ``drift`` when measured).

    An open cut-off (label window not closed yet: ``open`` true) has no labels, so only what needs
    none is judged: band volumes, rule coverage and drift, a horizon earlier than the rest.
    """
    as_of = current["as_of"]
    alerts: list[Alert] = []
    if current.get("models"):
        alerts += _performance(reference, current, as_of, config)
        alerts += _calibration(reference, current, as_of, config)
    if current.get("bands"):
        alerts += _bands(reference, current, as_of, config)
    if current.get("rules"):
        alerts += _rules(reference, current, as_of, config)
    if current.get("drift"):
        alerts += drift_alerts(current["drift"], as_of, config, reference.get("drift"))
    return alerts
