"""Purchase-history features: what happened since a contact's last purchase, and its own rhythm.

The RFM summaries of ``features/build.py`` (``rfm_frequency``, ``rfm_recency_days``,
``rfm_tenure_days``, ``rfm_monetary``) are what BG/NBD-style models read. Repeat-purchase models
that also see engagement read more, and this family gives it, per purchase-like type ``P`` (the
config's ``monetary_types``; ``p`` its safe name) when ``purchase_history_features`` is on:

- ``{t}__count_since_last_{p}``: events of each other feature type ``t`` after the last ``P``
  event (``last_ts < ts < as_of``): a customer still visiting after its last order is likely
  still a customer, one gone quiet is likely lost. NULL without a ``P`` event, 0 when none since.
- ``{t}__rate_since_last_{p}``: that count per day since the last ``P`` event;
  ``{t}__rate_before_last_{p}``: the type's events up to (and at) the last ``P`` event per day
  from the contact's first event (of any type) to it (NULL when that is the same instant);
  ``{t}__rate_change_since_last_{p}``: the one over the other (below 1: quieter since the last
  purchase than before it; NULL when the rate before is 0 or NULL).
- ``{p}__recency_over_gap``: days since the last ``P`` event over the contact's own mean gap
  between ``P`` days (first to last purchase day over the gaps between them): 1 = "due now",
  well above 1 = overdue. NULL below two purchase days.
- ``{p}__last_gap_days``: the last purchase day minus the one before (NULL below two days);
  ``{p}__gap_trend``: that last gap over the mean gap (above 1 = slowing down).
- ``{p}__last_value``: the value of the last purchase day (its events' values summed, NULL as 0,
  as the RFM monetary value counts a day); NULL without a purchase.

Purchase days are UTC dates, as in the RFM summaries (two orders on one day are one repeat).
Point in time: only events with ``ts < as_of`` are read (each spine row its own). Two small
queries on any Ibis backend (DuckDB, Spark, PostgreSQL): the spine joined to the purchase-like
events only (ranked per day: the last two days and the count), then the rows with a purchase
joined to their events (counts per type before and after each purchase type's last event).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ibis
import ibis.expr.types as ir

from propensity.features.expressions import when as _when
from propensity.features.spine import TIMESTAMP_US

__all__ = ["purchase_history_columns", "purchase_history_table", "with_purchase_history"]

_US_PER_DAY = 86_400_000_000


def purchase_history_columns(names: Mapping[str, str], monetary: Sequence[str]) -> list[str]:
    """The family's column names, in the build's order (``names``: event type -> safe name)."""
    out: list[str] = []
    for purchase in monetary:
        p = names[purchase]
        out += [f"{p}__recency_over_gap", f"{p}__last_gap_days", f"{p}__gap_trend", f"{p}__last_value"]
        for event_type, t in names.items():
            if event_type != purchase:
                out += [f"{t}__count_since_last_{p}", f"{t}__rate_since_last_{p}", f"{t}__rate_before_last_{p}",
                        f"{t}__rate_change_since_last_{p}"]
    return out


def _events(events: ibis.Table) -> ibis.Table:
    return events.select(_contact=events.contact_id.cast("string"), _type=events.event_type.cast("string"),
                         _ts=events.ts.cast(TIMESTAMP_US), _value=events.value.cast("float64"))


def _purchase_days(rows: ibis.Table, ev: ibis.Table, names: Mapping[str, str],
                   monetary: Sequence[str]) -> ibis.Table:
    """Per ``(contact_id, as_of)`` with a purchase-like event before ``as_of``: per type, the last
    event's time, the last two purchase days, the first one, the number of days, the last day's value."""
    bought = ev.filter(ev._type.isin(list(monetary)))
    joined = rows.inner_join(bought, [rows.contact_id == bought._contact, bought._ts < rows.as_of])
    days = joined.group_by(["contact_id", "as_of", "_type", joined._ts.date().name("_day")]).aggregate(
        _last_ts=joined._ts.max(), _v=joined._value.fill_null(0.0).sum())
    per_type = ["contact_id", "as_of", "_type"]
    ranked = days.mutate(
        _rank=ibis.row_number().over(ibis.window(group_by=per_type, order_by=ibis.desc("_day"))),
        _n_days=days._day.count().over(ibis.window(group_by=per_type)),
        _first_day=days._day.min().over(ibis.window(group_by=per_type)))
    ranked = ranked.filter(ranked._rank <= 1)
    aggs: dict[str, ir.Scalar] = {}
    for purchase in monetary:
        p = names[purchase]
        last, before = (ranked._type == purchase) & (ranked._rank == 0), (ranked._type == purchase) & (ranked._rank == 1)
        aggs[f"_{p}__last_ts"] = _when(last, ranked._last_ts).max()
        aggs[f"_{p}__last_day"] = _when(last, ranked._day).max()
        aggs[f"_{p}__prev_day"] = _when(before, ranked._day).max()
        aggs[f"_{p}__first_day"] = _when(last, ranked._first_day).max()
        aggs[f"_{p}__n_days"] = _when(last, ranked._n_days).max()
        aggs[f"_{p}__last_value"] = _when(last, ranked._v).max()
    return ranked.group_by(["contact_id", "as_of"]).aggregate(**aggs)


def _counts_around(anchors: ibis.Table, ev: ibis.Table, names: Mapping[str, str],
                   monetary: Sequence[str]) -> ibis.Table:
    """Per row with a purchase: events of each type before (at) and after each purchase type's
    last event, and the contact's first event of any type."""
    keyed = anchors.select("contact_id", "as_of", *[f"_{names[p]}__last_ts" for p in monetary])
    joined = keyed.inner_join(ev, [keyed.contact_id == ev._contact, ev._ts < keyed.as_of])
    one = ibis.literal(1, "int64")
    aggs: dict[str, ir.Scalar] = {"_first_ts": joined._ts.min()}
    for purchase in monetary:
        p = names[purchase]
        after = joined._ts > joined[f"_{p}__last_ts"]
        for event_type, t in names.items():
            if event_type != purchase:
                mine = joined._type == event_type
                aggs[f"_{t}__n_since_{p}"] = _when(after & mine, one).count()
                aggs[f"_{t}__n_before_{p}"] = _when(~after & mine, one).count()
    return joined.group_by(["contact_id", "as_of"]).aggregate(**aggs)


def purchase_history_table(events: ibis.Table, rows: ibis.Table, names: Mapping[str, str],
                           monetary: Sequence[str]) -> ibis.Table:
    """``contact_id, as_of`` and :func:`purchase_history_columns` for the rows with a purchase-like
    event before their ``as_of`` (a left join onto the feature rows gives the others NULLs).

    ``rows``: distinct ``(contact_id string, as_of timestamp(6))``; ``names``: the feature types
    and their safe names; ``monetary``: the purchase-like types among them (at least one).
    """
    if not monetary:
        raise ValueError("purchase-history features need at least one purchase-like type (monetary_types)")
    ev = _events(events)
    anchors = _purchase_days(rows, ev, names, monetary)
    counts = _counts_around(anchors, ev, names, monetary).rename(_k_contact="contact_id", _k_as_of="as_of")
    t = anchors.left_join(counts, [anchors.contact_id == counts._k_contact, anchors.as_of == counts._k_as_of])
    out: dict[str, ir.Value] = {}
    for purchase in monetary:
        p = names[purchase]
        last_ts, n_days = t[f"_{p}__last_ts"], t[f"_{p}__n_days"]
        days_since = t.as_of.delta(last_ts, unit="microsecond").cast("float64") / _US_PER_DAY
        span = t[f"_{p}__last_day"].delta(t[f"_{p}__first_day"], unit="day").cast("float64")
        mean_gap = _when(n_days > 1, span / (n_days - 1).cast("float64"))
        last_gap = t[f"_{p}__last_day"].delta(t[f"_{p}__prev_day"], unit="day").cast("float64")
        out[f"{p}__recency_over_gap"] = days_since / mean_gap
        out[f"{p}__last_gap_days"] = last_gap
        out[f"{p}__gap_trend"] = last_gap / mean_gap
        out[f"{p}__last_value"] = t[f"_{p}__last_value"]
        for event_type, name in names.items():
            if event_type != purchase:
                # a purchase with nothing after it: 0; no purchase of this type: NULL
                count = _when(last_ts.notnull(), t[f"_{name}__n_since_{p}"].fill_null(0))
                rate = count.cast("float64") / days_since
                # the same type's rate from the contact's first event up to the last purchase
                lived = last_ts.delta(t._first_ts, unit="microsecond").cast("float64") / _US_PER_DAY
                before = _when(lived > 0, t[f"_{name}__n_before_{p}"].fill_null(0).cast("float64") / lived)
                out[f"{name}__count_since_last_{p}"] = count
                out[f"{name}__rate_since_last_{p}"] = rate
                out[f"{name}__rate_before_last_{p}"] = before
                out[f"{name}__rate_change_since_last_{p}"] = _when(before > 0, rate / before)
    return t.select("contact_id", "as_of", **out)


def with_purchase_history(feats: ibis.Table, events: ibis.Table, rows: ibis.Table, names: Mapping[str, str],
                          monetary: Sequence[str]) -> tuple[ibis.Table, list[str]]:
    """``feats`` (one row per ``contact_id, as_of``) plus :func:`purchase_history_table`'s columns,
    NULL on the rows without a purchase before their ``as_of``; and the names added."""
    extra = purchase_history_table(events, rows, names, monetary)
    added = [c for c in extra.columns if c not in ("contact_id", "as_of")]
    extra = extra.rename(_ph_contact="contact_id", _ph_as_of="as_of")
    joined = feats.left_join(extra, [feats.contact_id == extra._ph_contact, feats.as_of == extra._ph_as_of])
    return joined.select(*feats.columns, *added), added
