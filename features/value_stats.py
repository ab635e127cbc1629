"""Per-type summaries of the events' values (all history before ``as_of``): a measurement, not a weight.

Where an event's ``value`` is a measurement (a mark, a delay in days, an order amount), its sum
and decayed sum (the build's families) mix how often with how much. The columns here say how
much on its own, per event type listed in ``value_stats_types`` (in the build's type order):

- ``{type}__value_mean``, ``{type}__value_min``, ``{type}__value_max``: over the type's events with
  ``ts < as_of`` (all history); NULL without one.
- ``{type}__value_last``: the value at the latest such instant; when several events share it,
  the largest of their values (a fixed rule, so a rerun gives the same column). NULL without one.

and, per type and threshold ``T`` of ``value_thresholds``, ``{type}__count_value_below_{T}``: its
events (all history before ``as_of``) with ``value < T``; 0 without one.

How: the events of these types only (a filter before the join, so the family costs a join of few
rows, not another pass over every joined event) are joined to the spine rows on ``ts < as_of``,
aggregated per ``(contact, as_of, type, ts)`` (which makes the latest instant a unique key), then
per ``(contact, as_of)`` with one pivot per type; the result is LEFT JOINed to the feature rows.
Portable Ibis only (DuckDB and Spark).
"""

from __future__ import annotations

from collections.abc import Mapping

import ibis
import ibis.expr.types as ir

from propensity.features.config import FeatureConfig
from propensity.features.spine import TIMESTAMP_US

__all__ = ["threshold_text", "value_stat_columns", "with_value_stats"]

_STATS = ("value_mean", "value_min", "value_max", "value_last")


def threshold_text(threshold: float) -> str:
    """``40.0`` -> ``"40"``, ``0.5`` -> ``"0_5"``, ``-3`` -> ``"minus_3"``: a column-name-safe number."""
    text = f"{threshold:g}".replace("-", "minus_").replace(".", "_").replace("+", "")
    return text


def _planned(config: FeatureConfig, names: Mapping[str, str]) -> list[tuple[str, str]]:
    """(event type, safe name) of the types with any value summary, in the build's type order."""
    wanted = set(config.value_stats_types) | set(config.value_thresholds)
    unknown = sorted(wanted - set(names))
    if unknown:
        raise ValueError(f"value_stats_types / value_thresholds name {unknown}, which are not among the "
                         f"feature's event types {sorted(names)}: list them in event_types or drop them")
    return [(t, n) for t, n in names.items() if t in wanted]


def value_stat_columns(config: FeatureConfig, names: Mapping[str, str]) -> list[str]:
    """The family's columns, in order, for a config and the build's ``type -> safe name`` map."""
    out: list[str] = []
    for event_type, name in _planned(config, names):
        if event_type in config.value_stats_types:
            out += [f"{name}__{stat}" for stat in _STATS]
        for threshold in config.value_thresholds.get(event_type, ()):
            out.append(f"{name}__count_value_below_{threshold_text(threshold)}")
    return out


def _per_instant(spine: ibis.Table, events: ibis.Table, types: list[str], thresholds: list[float]) -> ibis.Table:
    """Per ``(contact, as_of, type, ts)``: the sum, count, min and max of the values, and per
    threshold the count below it."""
    ev = events.filter(events.event_type.cast("string").isin(types))
    ev = ev.select(_contact=ev.contact_id.cast("string"), _type=ev.event_type.cast("string"),
                   _ts=ev.ts.cast(TIMESTAMP_US), _value=ev.value.cast("float64"))
    joined = spine.inner_join(ev, [spine.contact_id == ev._contact, ev._ts < spine.as_of])
    aggs: dict[str, ir.Scalar] = {"_sum": joined._value.sum(), "_n": joined._value.count(),
                                  "_min": joined._value.min(), "_max": joined._value.max()}
    for i, threshold in enumerate(thresholds):
        below = ibis.ifelse(joined._value < threshold, ibis.literal(1, "int64"), ibis.literal(0, "int64"))
        aggs[f"_below{i}"] = below.sum()
    return joined.group_by(["contact_id", "as_of", "_type", "_ts"]).aggregate(**aggs)


def _pivot(t: ibis.Table, config: FeatureConfig, planned: list[tuple[str, str]],
           thresholds: list[float]) -> dict[str, ir.Scalar]:
    out: dict[str, ir.Scalar] = {}
    for event_type, name in planned:
        is_type = t._type == event_type

        def when(value: ir.Value, is_type: ir.BooleanValue = is_type) -> ir.Value:
            return ibis.ifelse(is_type, value, ibis.null(value.type()))

        if event_type in config.value_stats_types:
            out[f"{name}__value_mean"] = when(t._sum).sum() / when(t._n).sum().cast("float64")
            out[f"{name}__value_min"] = when(t._min).min()
            out[f"{name}__value_max"] = when(t._max).max()
            # ts is unique within (contact, as_of, type) here, so the latest instant is one row
            out[f"{name}__value_last"] = when(t._max).argmax(when(t._ts))
        for threshold in config.value_thresholds.get(event_type, ()):
            i = thresholds.index(threshold)
            # through float: DuckDB sums BIGINT into HUGEINT (as features/build.py's _sum_count)
            out[f"_{name}__below{i}"] = when(t[f"_below{i}"]).sum().cast("float64").cast("int64")
    return out


def with_value_stats(feats: ibis.Table, spine: ibis.Table, events: ibis.Table, config: FeatureConfig,
                     names: Mapping[str, str]) -> tuple[ibis.Table, list[str]]:
    """``feats`` (one row per ``contact_id, as_of`` of ``spine``) with the family's columns, and their names.

    Parameters
    ----------
    feats : ibis.Table
        The build's feature rows, keyed by ``contact_id`` and ``as_of``.
    spine : ibis.Table
        The distinct ``(contact_id, as_of)`` rows (string, timestamp(6)) the rows were built for.
    events : ibis.Table
        Canonical events.
    config : FeatureConfig
    names : mapping
        Event type -> its safe name, in the build's order.
    """
    planned = _planned(config, names)
    columns = value_stat_columns(config, names)
    if not planned:
        return feats, columns
    thresholds = sorted({t for event_type, _ in planned for t in config.value_thresholds.get(event_type, ())})
    per_instant = _per_instant(spine, events, [t for t, _ in planned], thresholds)
    raw = per_instant.group_by(["contact_id", "as_of"]).aggregate(**_pivot(per_instant, config, planned, thresholds))
    raw = raw.rename(_vs_contact="contact_id", _vs_as_of="as_of")
    joined = feats.left_join(raw, [feats.contact_id == raw._vs_contact, feats.as_of == raw._vs_as_of])
    values: dict[str, ir.Value] = {}
    for event_type, name in planned:
        if event_type in config.value_stats_types:
            for stat in _STATS:
                values[f"{name}__{stat}"] = joined[f"{name}__{stat}"]
        for threshold in config.value_thresholds.get(event_type, ()):
            i = thresholds.index(threshold)
            values[f"{name}__count_value_below_{threshold_text(threshold)}"] = joined[f"_{name}__below{i}"].fill_null(0)
    keep = [c for c in feats.columns]
    return joined.select(*keep, **values), columns
