"""The repeat-purchase summaries of ``build_features`` (``monetary_types``): per purchase-like type,
the day-level counts lifetimes' ``summary_data_from_transaction_data`` computes, as two levels of
the feature build's aggregation (level 1 rows of these types are per UTC day)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ibis
import ibis.expr.types as ir

from propensity.features.expressions import when

__all__ = ["purchase_aggregates", "purchase_features", "with_purchase_days"]


def with_purchase_days(by_type: ibis.Table, monetary: Sequence[str]) -> ibis.Table:
    """Level-1 rows plus, on purchase-like rows, their day's total and one flag per day.

    A purchase-like type's level-1 rows are per ``(contact, as_of, type, member account,
    day)``; a day whose events name two accounts has two rows, so the day's total and one
    representative row come from a window per day.
    """
    if not monetary:
        return by_type
    day = ibis.window(group_by=["contact_id", "as_of", "_type", "_pday"])
    ordered = ibis.window(group_by=["contact_id", "as_of", "_type", "_pday"], order_by=["_m_account"])
    return by_type.mutate(
        _pd_first=ibis.row_number().over(ordered) == 0, _pd_v=by_type._pv.sum().over(day)
    )


def purchase_aggregates(t: ibis.Table, monetary: Sequence[str], names: Mapping[str, str]) -> dict[str, ir.Scalar]:
    """Level 2, per purchase-like type: day-level totals before ``as_of``, as repeat-purchase
    models count them (a day with two orders is one repeat): the number of days, the first
    and last day (offsets before ``as_of``'s date) and the first day's value; NULL without one.

    Exact distinct days without ``COUNT(DISTINCT)`` (see features/build.py's module docstring) and without
    day bitmasks (all history): the level-1 rows of these types are per day.
    """
    aggs: dict[str, ir.Scalar] = {}
    one = ibis.literal(1).cast("int64")
    for event_type in monetary:
        name = names[event_type]
        on = (t._type == event_type) & t._pday.notnull()
        aggs[f"_{name}__p_days"] = when(on & t._pd_first, one).sum()
        aggs[f"_{name}__p_first"] = when(on, t._pday).max()
        aggs[f"_{name}__p_last"] = when(on, t._pday).min()
        aggs[f"_{name}__p_total"] = when(on, t._pv).sum()
        aggs[f"_{name}__p_first_v"] = when(on, t._pd_v).argmax(when(on, t._pday))
    return aggs


def purchase_features(agg: ibis.Table, name: str) -> dict[str, ir.Value]:
    """lifetimes' ``summary_data_from_transaction_data`` (freq ``D``) at each ``as_of``.

    The observation ends at the last instant before ``as_of``: its UTC date is ``as_of``'s,
    or the day before when ``as_of`` is a midnight. NULL without a purchase (as lifetimes
    leaves such a customer out), except ``value_total`` (0).
    """
    days, first, last = agg[f"_{name}__p_days"], agg[f"_{name}__p_first"], agg[f"_{name}__p_last"]
    total, first_value = agg[f"_{name}__p_total"], agg[f"_{name}__p_first_v"]
    midnight = ibis.ifelse(agg.as_of.truncate("D") == agg.as_of, 1, 0)
    frequency = (days - 1).cast("float64")
    return {
        f"{name}__rfm_frequency": frequency,
        f"{name}__rfm_recency_days": (first - last).cast("float64"),
        f"{name}__rfm_tenure_days": (first - midnight).cast("float64"),
        f"{name}__rfm_monetary": when(
            days.notnull(), ibis.ifelse(days > 1, (total - first_value) / frequency, 0.0)
        ),
        f"{name}__value_total": total.fill_null(0.0),
    }
