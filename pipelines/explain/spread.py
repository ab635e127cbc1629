"""Type-agnostic features' SHAP shared over the event types they are made of.

``all__count_30d`` is the sum of every type's ``{type}__count_30d``; left as a group of its own
(``all_activity``), it took 36% of the SHAP mass on the signal world, hiding that the contact's
product use was the largest driver. Each such feature is a function of per-type parts that the
model also has as columns, so its log-odds on a row are shared over event types in proportion to
what each type put into it on that row:

* ``all__count_{n}d``, ``all__momentum_{m}d``: each type's ``{type}__count_{n}d`` (for momentum the
  window nearest ``m``);
* ``value__sum_{n}d``, ``value__max_{n}d``: the counts in that window of the purchase-like types
  (those with ``__rfm_*`` columns), else of every type;
* ``all__distinct_types_{n}d``: equally over the types seen in the window;
* ``all__days_since_last``: the type(s) of the latest event.

A row where no type put anything in (no events in the window) is shared by the types' average
composition over the explained rows, so "no activity" is charged to the types whose absence it is.
Shares sum to one on every row, so group log-odds still add up to the margin and the points to
``score - baseline`` exactly (explain/attribution.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from propensity.pipelines.explain.groups import ACTIVITY, FeatureGroups

__all__ = ["spread_over_event_types"]

_WINDOWED = re.compile(r"^(all|value)__(count|momentum|sum|max|distinct_types)_(\d+)d$")


def _counts(features: pd.DataFrame, types: list[str], window: int, available: set[str],
            read: dict[int, np.ndarray]) -> np.ndarray:
    """Row x type event counts in ``window`` (``read``: those already read, by window: several
    features share a window, and selecting columns costs more than the arithmetic on one row)."""
    if window not in read:
        columns = [f"{t}__count_{window}d" for t in types]
        if not all(c in available for c in columns):
            read[window] = np.zeros((len(features), len(types)))
        else:
            read[window] = np.nan_to_num(features[columns].to_numpy(dtype="float64"), nan=0.0)
    return read[window].copy()


def _nearest_window(windows: list[int], wanted: int) -> int | None:
    return min(windows, key=lambda w: (abs(w - wanted), w)) if windows else None


def _weights(name: str, features: pd.DataFrame, types: list[str], purchase: list[str],
             windows: list[int], available: set[str], read: dict[int, np.ndarray]) -> np.ndarray | None:
    """Row x type weights of one type-agnostic feature (None: not one this module knows)."""
    if name == "all__days_since_last":
        columns = [f"{t}__days_since_last" for t in types]
        if not all(c in available for c in columns):
            return None
        since = features[columns].to_numpy(dtype="float64")
        latest = np.nanmin(np.where(np.isnan(since), np.inf, since), axis=1)
        return (since == latest[:, None]).astype("float64")
    match = _WINDOWED.match(name)
    if match is None:
        return None
    family, kind, window = match.group(1), match.group(2), int(match.group(3))
    if kind == "momentum":
        window = _nearest_window(windows, window)
        if window is None:
            return None
    counts = _counts(features, types, window, available, read)
    if kind == "distinct_types":
        return (counts > 0).astype("float64")
    if family == "value" and purchase:
        keep = np.isin(types, purchase)
        counts = counts * keep[None, :]
    return counts


def spread_over_event_types(contributions: pd.DataFrame, features: pd.DataFrame,
                            groups: FeatureGroups) -> tuple[pd.DataFrame, FeatureGroups]:
    """Group log-odds with the ``all_activity`` features' shares moved onto event-type groups.

    Returns the group log-odds (columns: the groups, ``all_activity`` gone when every one of its
    features could be shared) and the groups in that order. Features this module does not know
    stay in ``all_activity``.
    """
    available = set(features.columns)
    # event groups with per-type columns (a rule column's event type may have none)
    types = [g for g in groups.order if groups.kinds[g] == "event" and f"{g}__days_since_last" in available]
    agnostic = groups.features_of(ACTIVITY) if ACTIVITY in groups.kinds else []
    values = contributions.to_numpy(dtype="float64")
    position = {name: j for j, name in enumerate(contributions.columns)}
    members: dict[str, list[int]] = {}
    for name in contributions.columns:
        members.setdefault(groups.of_feature[name], []).append(position[name])

    def group_frame(order: Sequence[str], moved: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
        # numpy over the groups' columns, one frame at the end: pandas' groupby and column
        # assignments cost ~10 ms for one row (the service explains one contact per request)
        data = {}
        for group in order:
            summed = values[:, members[group]].sum(axis=1) if group in members else np.zeros(len(values))
            data[group] = summed + moved[group] if moved is not None and group in moved else summed
        return pd.DataFrame(data, index=contributions.index, columns=list(order))

    if not types or not agnostic:
        return group_frame(groups.order), groups
    windows = sorted({int(m.group(1)) for c in available if (m := re.search(r"__count_(\d+)d$", c))})
    purchase = [t for t in types if f"{t}__rfm_frequency" in available]
    moved = np.zeros((len(contributions), len(types)))
    kept: list[str] = []
    read: dict[int, np.ndarray] = {}
    for name in agnostic:
        weights = _weights(name, features, types, purchase, windows, available, read)
        if weights is None:
            kept.append(name)
            continue
        total = weights.sum(axis=1)
        empty = total <= 0
        if empty.any():
            average = weights[~empty].mean(axis=0) if (~empty).any() else np.ones(len(types))
            if average.sum() <= 0:
                average = np.ones(len(types))
            weights[empty] = average
            total = weights.sum(axis=1)
        moved += weights / total[:, None] * values[:, position[name]][:, None]
    members[ACTIVITY] = [position[name] for name in kept]  # the features that could not be shared
    order = groups.order if kept else tuple(g for g in groups.order if g != ACTIVITY)
    regrouped = FeatureGroups(of_feature=groups.of_feature, kinds=groups.kinds, order=order)
    return group_frame(order, {t: moved[:, i] for i, t in enumerate(types)}), regrouped
