"""Plots drawn from computed explanation data (matplotlib is imported only here, when called)."""

from __future__ import annotations

import pandas as pd

__all__ = ["plot_dependence", "plot_importance"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is a core dependency
        raise ImportError("plots need matplotlib: pip install matplotlib") from exc
    return plt


def plot_dependence(data: pd.DataFrame, *, axes=None, y: str = "points"):
    """One scatter per feature: its value against its contribution (``points`` or ``logodds``).

    Parameters
    ----------
    data : pandas.DataFrame
        Output of :func:`propensity.pipelines.explain.dependence`.
    axes : sequence of matplotlib Axes, optional
        One per feature; a new figure is made when omitted.
    y : {"points", "logodds", "learned_score"}

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    features = list(dict.fromkeys(data["feature"]))
    if axes is None:
        fig, axes = plt.subplots(1, len(features), figsize=(4 * len(features), 3.2), squeeze=False)
        axes = axes[0]
    else:
        fig = axes[0].figure
    for ax, feature in zip(axes, features):
        part = data[data["feature"] == feature]
        values = part["value"]
        if pd.api.types.is_numeric_dtype(values):
            ax.scatter(values, part[y], s=4, alpha=0.4)
        else:
            means = part.groupby("value", observed=True)[y].mean().sort_values()
            ax.bar(means.index.astype(str), means.to_numpy())
            ax.tick_params(axis="x", rotation=45)
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set_title(feature, fontsize=9)
        ax.set_xlabel("value")
        ax.set_ylabel({"points": "contribution (0-5 points)", "logodds": "SHAP (log-odds)"}.get(y, y))
    fig.tight_layout()
    return fig


def plot_importance(importance: pd.DataFrame, *, ax=None, top: int = 15):
    """Horizontal bars of mean ``|SHAP|`` per group in 0-5 points (from :func:`global_importance`)."""
    plt = _pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 0.3 * min(top, len(importance)) + 1))
    else:
        fig = ax.figure
    part = importance.head(top).iloc[::-1]
    ax.barh(part["group"], part["mean_abs_points"])
    ax.set_xlabel("mean |contribution| (0-5 points)")
    fig.tight_layout()
    return fig
