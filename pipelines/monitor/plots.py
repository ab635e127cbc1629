"""The monitor page's figures, drawn from the stored series (nothing recomputed): time on the x
axis, the three models side by side. ``matplotlib.figure.Figure`` directly (no pyplot)."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping

import pandas as pd

from propensity.pipelines.compare.verdict import spoken
from propensity.pipelines.monitor.alerts import log_odds_ratio
from propensity.pipelines.monitor.config import MonitorConfig

__all__ = ["PLOT_IDS", "render_plots"]

PLOT_IDS = ("ranking", "precision", "calibration", "band_share", "band_conversion", "drift", "rule_coverage", "rule_odds")
_COLORS = {"rules": "#4c72b0", "learned": "#dd8452", "learned_points": "#55a868"}
_DPI = 90


def _figure(ncols: int, height: float = 3.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(4.2 * ncols, 6.0), height), dpi=_DPI, layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False, sharey=True)[0]


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _dates(cutoffs) -> list[pd.Timestamp]:
    return [pd.Timestamp(c["as_of"]) for c in cutoffs]


def _time_axis(ax, x) -> None:
    """One tick per cut-off (at most 12 labelled), so labels never collide."""
    if not x:
        return
    every = max(1, -(-len(x) // 12))
    ax.set_xticks(x[::every], [f"{d:%Y-%m-%d}" for d in x[::every]], rotation=45, ha="right")


def _interval_figure(series: Mapping, metric: str, label: str):
    models, cutoffs, reference = series["meta"]["models"], series["cutoffs"], series["reference"] or {}
    fig, axes = _figure(len(models))
    x = _dates(cutoffs)
    for ax, model in zip(axes, models, strict=True):
        rows = [c["models"].get(model, {}) for c in cutoffs]
        value = [r.get(metric) for r in rows]
        low = [r.get(f"{metric}_low") for r in rows]
        high = [r.get(f"{metric}_high") for r in rows]
        color = _COLORS.get(model, "C0")
        ref = reference.get("models", {}).get(model, {})
        if ref.get(f"{metric}_low") is not None:
            ax.axhspan(ref[f"{metric}_low"], ref[f"{metric}_high"], color="#dddddd", label="reference interval")
            ax.axhline(ref[metric], color="grey", linestyle=":", label="reference")
        ax.fill_between(x, [v if v is not None else float("nan") for v in low],
                        [v if v is not None else float("nan") for v in high], color=color, alpha=0.25)
        ax.plot(x, [v if v is not None else float("nan") for v in value], marker="o", color=color, label=spoken(model))
        ax.set_title(spoken(model))
        ax.set_xlabel("cut-off")
        _time_axis(ax, x)
    axes[0].set_ylabel(label)
    axes[0].legend(loc="lower left", fontsize="small")
    return fig


def _calibration_figure(series: Mapping):
    models, cutoffs = series["meta"]["models"], series["cutoffs"]
    fig, axes = _figure(len(models))
    x = _dates(cutoffs)
    for ax, model in zip(axes, models, strict=True):
        rows = [c["models"].get(model, {}) for c in cutoffs]
        ax.plot(x, [r.get("positives", float("nan")) for r in rows], marker="o", color=_COLORS.get(model, "C0"),
                label="observed conversions")
        ax.plot(x, [r.get("predicted", float("nan")) for r in rows], marker="x", linestyle="--", color="grey",
                label="predicted (sum of probabilities)")
        ax.set_title(spoken(model))
        _time_axis(ax, x)
    axes[0].set_ylabel("conversions per cut-off")
    axes[0].legend(loc="upper left", fontsize="small")
    return fig


def _band_figure(series: Mapping, measure: str, label: str):
    models, cutoffs = series["meta"]["models"], series["cutoffs"]
    bands = [b["name"] for b in series["meta"]["bands"]]
    fig, axes = _figure(len(models))
    x = _dates(cutoffs)
    for ax, model in zip(axes, models, strict=True):
        for i, band in enumerate(bands):
            values = []
            for c in cutoffs:
                row = next((b for b in c["bands"].get(model, []) if b["band"] == band), None)
                values.append(float("nan") if row is None or row.get(measure) is None else row[measure])
            ax.plot(x, values, marker="o", color=f"C{i}", label=band)
        ax.set_title(spoken(model))
        _time_axis(ax, x)
    axes[0].set_ylabel(label)
    axes[0].legend(loc="upper left", fontsize="small")
    return fig


def _drift_figure(series: Mapping, config: MonitorConfig):
    from matplotlib.figure import Figure

    cutoffs = [c for c in [*series["cutoffs"], series.get("open") or {}] if c.get("drift")]
    fig = Figure(figsize=(8.4, 3.6), dpi=_DPI, layout="constrained")
    ax = fig.subplots()
    if cutoffs:
        frame = pd.DataFrame([{"as_of": pd.Timestamp(c["as_of"]), **{f["feature"]: f["psi"] for f in c["drift"]["features"]
                                                                    if not config.drift.ignored(f["feature"])}}
                              for c in cutoffs]).set_index("as_of")
        leaders = frame.iloc[-1].sort_values(ascending=False).index[:config.drift.top_movers]
        for i, feature in enumerate(leaders):
            ax.plot(frame.index, frame[feature], marker="o", color=f"C{i}", label=feature)
        ax.axhline(config.drift.psi_threshold, color="#b42318", linestyle="--", linewidth=1, label="alert threshold")
        if (series.get("open") or {}).get("drift"):
            ax.axvline(pd.Timestamp(series["open"]["as_of"]), color="grey", linestyle=":", linewidth=1,
                       label="open cut-off (labels not in yet)")
        ax.legend(loc="upper left", fontsize="small")
        _time_axis(ax, list(frame.index))
    ax.set_ylabel("PSI against the training rows")
    ax.set_title("the features that moved most by the latest cut-off (ignored ages left out)")
    return fig


def _rule_figure(series: Mapping):
    from matplotlib.figure import Figure

    cutoffs = [c for c in series["cutoffs"] if c.get("rules")]
    fig = Figure(figsize=(8.4, 3.4), dpi=_DPI, layout="constrained")
    ax = fig.subplots()
    if cutoffs:
        rules = [r["rule"] for r in cutoffs[0]["rules"]]
        for i, rule in enumerate(rules):
            share = [next((r["holders"] / max(r["holders"] + r["others"], 1) for r in c["rules"] if r["rule"] == rule),
                          float("nan")) for c in cutoffs]
            ax.plot(_dates(cutoffs), share, marker=".", color=f"C{i % 10}", linestyle="-" if i < 10 else "--", label=rule)
        ax.legend(loc="upper left", fontsize="x-small", ncols=2)
        _time_axis(ax, _dates(cutoffs))
    ax.set_ylabel("share of contacts with its points")
    ax.set_title("your rules: how many contacts each rule gives points to")
    return fig


def _rule_odds_figure(series: Mapping, min_conversions: int):
    """Each rule's odds ratio of conversion (its contacts vs the others), log scale: a rule whose
    event stops signalling intent falls towards 1."""
    from matplotlib.figure import Figure

    cutoffs = [c for c in series["cutoffs"] if c.get("rules") and "holder_conversions" in c["rules"][0]]
    reference = {r["rule"]: r for r in (series.get("reference") or {}).get("rules", [])}
    fig = Figure(figsize=(8.4, 3.6), dpi=_DPI, layout="constrained")
    ax = fig.subplots()
    judged = [rule for rule, row in reference.items() if row["holder_conversions"] >= min_conversions]
    for i, rule in enumerate(judged):
        ratios = []
        for c in cutoffs:
            row = next((r for r in c["rules"] if r["rule"] == rule), None)
            ratios.append(float("nan") if row is None or not row["holders"] else math.exp(log_odds_ratio(row)[0]))
        ax.plot(_dates(cutoffs), ratios, marker=".", color=f"C{i % 10}", linestyle="-" if i < 10 else "--", label=rule)
    ax.axhline(1.0, color="grey", linestyle=":")
    ax.set_yscale("log")
    if judged:
        ax.legend(loc="upper left", fontsize="x-small", ncols=2)
    _time_axis(ax, _dates(cutoffs))
    ax.set_ylabel("odds ratio of conversion")
    ax.set_title("your rules: how much more their contacts convert than the others (1 = no signal)")
    return fig


def render_plots(series: Mapping, config: MonitorConfig | None = None) -> dict[str, str]:
    """Plot id -> base64 PNG (``config``: the drift threshold and ignored features)."""
    config = config or MonitorConfig()
    return {
        "ranking": _png(_interval_figure(series, "roc_auc", "ROC-AUC (band: 95% interval)")),
        "precision": _png(_interval_figure(series, "pr_auc", "PR-AUC (band: 95% interval)")),
        "calibration": _png(_calibration_figure(series)),
        "band_share": _png(_band_figure(series, "share", "share of contacts per band")),
        "band_conversion": _png(_band_figure(series, "conversion_rate", "conversion rate per band")),
        "drift": _png(_drift_figure(series, config)),
        "rule_coverage": _png(_rule_figure(series)),
        "rule_odds": _png(_rule_odds_figure(series, config.alerts.rule_min_conversions)),
    }
