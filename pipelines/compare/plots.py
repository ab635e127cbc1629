"""Report figures drawn from a :class:`~propensity.pipelines.compare.core.Comparison`'s computed data.

Nothing is recomputed here. Figures are built on ``matplotlib.figure.Figure`` directly (no
pyplot, so no global figure state and no backend switch) and returned as PNG bytes.
"""

from __future__ import annotations

import base64
import io

import numpy as np

__all__ = ["PLOT_IDS", "render_plots"]

PLOT_IDS = ("gain", "calibration", "distribution", "bands", "transitions", "backtest")
_COLORS = {"rules": "#4c72b0", "learned": "#dd8452", "learned_points": "#55a868"}
_DPI = 100


def _figure(width: float, height: float, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _color(model: str, i: int) -> str:
    return _COLORS.get(model, f"C{i}")


def gain_figure(comparison):
    fig, (ax,) = _figure(6.4, 4.4)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="random")
    for i, model in enumerate(comparison.models):
        gain = comparison.curves[model]["gain"]
        ax.plot(gain["share"], gain["captured"], color=_color(model, i), label=model)
    for k in comparison.meta.get("top_k_percent", []):
        ax.axvline(k / 100.0, color="#bbbbbb", linewidth=0.8)
    ax.set_xlabel("share of contacts called (ranked by 0-5 score)")
    ax.set_ylabel("share of conversions captured")
    ax.set_xlim(0, 1); ax.set_ylim(0, 1.01)
    ax.set_title("cumulative gain (vertical lines: top k%)")
    ax.legend(loc="lower right")
    return fig


def calibration_figure(comparison):
    fig, (ax,) = _figure(5.4, 4.6)
    top = 0.0
    for i, model in enumerate(comparison.models):
        points = comparison.curves[model]["calibration"]
        ax.plot(points["predicted"], points["observed"], marker="o", color=_color(model, i), label=model)
        top = max(top, *points["predicted"], *points["observed"])
    limit = min(1.0, top * 1.1 + 0.01)
    ax.plot([0, limit], [0, limit], color="grey", linestyle=":", label="perfect")
    ax.set_xlim(0, limit); ax.set_ylim(0, limit)
    ax.set_xlabel("mean predicted probability (quantile bins)")
    ax.set_ylabel("observed conversion rate")
    ax.set_title("calibration on the held-out rows")
    ax.legend(loc="upper left")
    return fig


def distribution_figure(comparison):
    n = len(comparison.models)
    fig, axes = _figure(3.3 * n, 3.4, ncols=n)
    for ax, model in zip(axes, comparison.models):
        hist = comparison.curves[model]["histogram"]
        edges = np.asarray(hist["edges"])
        centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        for key, color, label in (("not_converted", "#999999", "not converted"), ("converted", "#c44e52", "converted")):
            counts = np.asarray(hist[key], dtype="float64")
            share = counts / counts.sum() if counts.sum() else counts
            ax.bar(centres, share, width=width, alpha=0.55, color=color, label=label, edgecolor="none")
        for band in comparison.meta.get("bands", [])[1:]:
            ax.axvline(band["min_score"], color="black", linewidth=0.7, linestyle="--")
        ax.set_title(model); ax.set_xlabel("0-5 score"); ax.set_xlim(0, 5)
    axes[0].set_ylabel("share of the group")
    axes[0].legend(loc="upper right", fontsize="small")
    return fig


def bands_figure(comparison):
    frame = comparison.bands
    bands = [b["name"] for b in comparison.meta.get("bands", [])] or list(dict.fromkeys(frame["band"]))
    fig, (ax,) = _figure(6.4, 4.0)
    width = 0.8 / max(len(comparison.models), 1)
    x = np.arange(len(bands))
    for i, model in enumerate(comparison.models):
        part = frame[frame["model"] == model].set_index("band").reindex(bands)
        rates = part["conversion_rate"].fillna(0.0).to_numpy()
        bars = ax.bar(x + (i - (len(comparison.models) - 1) / 2) * width, rates, width, color=_color(model, i), label=model)
        for bar, contacts in zip(bars, part["contacts"].fillna(0).astype(int)):
            ax.annotate(f"{contacts:,}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, bands)
    ax.set_ylabel("conversion rate")
    ax.set_title("conversion by band (labels: contacts in the band)")
    ax.legend()
    return fig


def transitions_figure(comparison):
    items = list(comparison.transitions.items())
    fig, axes = _figure(4.2 * max(len(items), 1), 3.9, ncols=max(len(items), 1))
    for ax, (name, matrix) in zip(axes, items):
        counts = np.asarray(matrix["counts"])
        ax.imshow(counts, cmap="Blues")
        source, target = name.split("->")
        bands = matrix["bands"]
        ax.set_xticks(range(len(bands)), bands); ax.set_yticks(range(len(bands)), bands)
        ax.set_xlabel(f"{target} band"); ax.set_ylabel(f"{source} band")
        high = counts.max() if counts.size else 0
        for i in range(counts.shape[0]):
            for j in range(counts.shape[1]):
                conv = matrix["conversions"][i][j]
                ax.text(j, i, f"{counts[i, j]:,}\n({conv} conv.)", ha="center", va="center", fontsize=8,
                        color="white" if counts[i, j] > high / 2 else "black")
        ax.set_title(name)
    return fig


def backtest_figure(comparison):
    table = comparison.backtest
    lift_columns = [c for c in table.columns if c.startswith("lift_top")]
    cutoffs = sorted(table["as_of"].unique())
    labels = [f"{c:%Y-%m-%d}" for c in cutoffs]
    position = {c: i for i, c in enumerate(cutoffs)}
    fig, axes = _figure(10.0, 3.9, ncols=2)
    n = len(comparison.models)
    for i, model in enumerate(comparison.models):
        part = table[table["model"] == model].sort_values("as_of")
        if part.empty:
            continue
        # models side by side at each cut-off so their intervals do not hide each other
        x = np.array([position[c] for c in part["as_of"]]) + (i - (n - 1) / 2) * 0.08
        y = part["roc_auc"].to_numpy()
        err = np.vstack([y - part["roc_auc_low"].to_numpy(), part["roc_auc_high"].to_numpy() - y])
        axes[0].errorbar(x, y, yerr=err, marker="o", capsize=3, color=_color(model, i), label=model)
        if lift_columns:
            column = lift_columns[len(lift_columns) // 2]
            axes[1].plot(x, part[column].to_numpy(), marker="o", color=_color(model, i), label=model)
    axes[0].set_title("ROC-AUC per cut-off (95% interval)"); axes[0].set_ylabel("ROC-AUC")
    if lift_columns:
        axes[1].set_title(f"lift in the top {lift_columns[len(lift_columns) // 2].removeprefix('lift_top')}%")
        axes[1].set_ylabel("lift")
    for ax in axes:
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel("cut-off (refitted on what was known then)")
        ax.tick_params(axis="x", labelrotation=20)
    axes[0].legend()
    return fig


_FIGURES = {
    "gain": gain_figure,
    "calibration": calibration_figure,
    "distribution": distribution_figure,
    "bands": bands_figure,
    "transitions": transitions_figure,
    "backtest": backtest_figure,
}


def render_plots(comparison) -> dict[str, str]:
    """Plot id -> base64 PNG for every figure the comparison has data for."""
    plots = {}
    for name, draw in _FIGURES.items():
        if name == "transitions" and not comparison.transitions:
            continue
        if name == "backtest" and (comparison.backtest is None or comparison.backtest.empty):
            continue
        plots[name] = base64.b64encode(_png(draw(comparison))).decode("ascii")
    return plots
