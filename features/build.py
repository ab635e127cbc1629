"""Point-in-time features as one lazy Ibis expression: events + spine (+ contacts) -> table.

Shape of the query (look at it with ``con.compile(expr)``):

1. ``spine LEFT JOIN contacts`` (the contact's table account) ``LEFT JOIN events ON
   contact_id AND ts < as_of``, a projection of per-row helpers (age, decay factors, day
   bits, the account the event counts for), then level 1: ``GROUP BY contact_id, as_of,
   event_type, member account`` with ~20 aggregates that name no type (counts per window,
   min/max age, decayed sums, day-bit ORs, value sums and maxima, latest account). The left
   join keeps contacts without history (one row with a NULL type).
2. Level 2: ``GROUP BY contact_id, as_of`` over the level-1 rows (~20x fewer than events):
   the per-type columns as ``SUM/MIN/BIT_OR(CASE WHEN type = ... )`` and the type-free
   families; then ``LEFT JOIN contacts`` for ``account_id`` and the attributes (one CTE).
3. Account families per ``(account_id, as_of)`` of step 2, from the level-1 rows of the
   members that are spine rows at that ``as_of`` (all of them for a spine of everyone
   known then), from the events for the other members, plus the contacts table's members;
   ``GROUP BY account, as_of, contact`` then ``GROUP BY account, as_of``, ``LEFT JOIN`` back.

Why it looks the way it does (DuckDB 2.0, 10M events, 100k contacts, 2 cores, CPU time):

- One wide ``GROUP BY contact_id, as_of`` evaluating ~150 per-type ``CASE`` values on every
  event row took 12-15 s; the two levels take ~6 s, about a hand-written query of the same
  shape. Pivoting level 2 with one ``LEFT JOIN`` per type was no faster in the whole query.
- Account features from the level-1 rows instead of a second join of all events to the
  accounts: ~0.8 s less. The check for members outside the spine is a LEFT JOIN + NULL test
  because DuckDB moved an anti-join above the join with the events.
- ``COUNT(*) FILTER (WHERE ...)`` is 3-5x slower than ``COUNT(CASE WHEN ... THEN 1 END)``
  once there are dozens of aggregates, so conditional values are used instead of ``where=``.
- Every ``COUNT(DISTINCT ...)`` is planned as its own aggregate branch over the joined rows
  (the full build took ~110 s with them), so none is used: active days are counted with
  per-type day bitmasks, distinct types from the per-type counts, and distinct account
  contacts with a two-level aggregate.

Only portable functions are used (the same expression runs on Ibis' PySpark backend):
``bit_count`` is declared as a builtin of both DuckDB and Spark SQL.

Time semantics are those of ``docs/ARCHITECTURE.md``: an event is used when ``ts < as_of``;
``age = as_of - ts`` in microseconds (an exact integer, so window edges are exact); a window
of N days holds ``0 < age <= N days``; decayed sums, ``days_since`` and ``tenure`` use all
history.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir
import pandas as pd

from propensity.features.accounts import (
    ACCOUNT_ROW_COLUMNS,
    account_names,
    account_picks,
    feature_rows,
    with_account_windows,
)
from propensity.features.attributes import attribute_columns
from propensity.features.auto import resolve_feature_config
from propensity.features.config import FeatureConfig
from propensity.features.history import with_attributes
from propensity.features.expressions import when as _when
from propensity.features.purchase_history import with_purchase_history
from propensity.features.rfm import purchase_aggregates, purchase_features, with_purchase_days
from propensity.features.spine import TIMESTAMP_US
from propensity.features.value_stats import with_value_stats

__all__ = [
    "KEY_COLUMNS",
    "build_features",
    "discover_event_types",
    "feature_columns",
    "safe_name",
]

KEY_COLUMNS = ("contact_id", "as_of", "account_id")
_US_PER_DAY = 86_400_000_000
# Day bitmasks are BIGINT words; bit 63 is the sign bit and DuckDB refuses to shift into it.
_WORD_BITS = 63
# A type named like a family prefix would produce e.g. `all__count_7d` twice.
_RESERVED_NAMES = frozenset({"all", "value", "account"})


@ibis.udf.scalar.builtin(name="bit_count")
def _bit_count(value: dt.int64) -> dt.int8:  # pragma: no cover - compiled, never called
    """Number of set bits; a builtin of DuckDB and Spark SQL."""


def safe_name(event_type: str) -> str:
    """The snake_case name of an event type used in feature names.

    ``"Demo Request"`` -> ``"demo_request"``, ``"pageView"`` -> ``"page_view"``. Names that
    would clash with a family prefix (``all``, ``value``, ``account``) get ``_event``
    appended; a name with nothing usable left becomes ``"event"``.

    Parameters
    ----------
    event_type : str

    Returns
    -------
    str
        Lowercase ASCII letters, digits and single underscores; never ``__``, so splitting a
        feature name at ``__`` is unambiguous.
    """
    text = unicodedata.normalize("NFKD", event_type).encode("ascii", "ignore").decode()
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    text = re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_").lower()
    if not text:
        return "event"
    return f"{text}_event" if text in _RESERVED_NAMES else text


def _type_names(event_types: Sequence[str]) -> dict[str, str]:
    names: dict[str, str] = {}
    for event_type in event_types:
        name = safe_name(event_type)
        clash = [t for t, n in names.items() if n == name]
        if clash:
            raise ValueError(
                f"event types {clash[0]!r} and {event_type!r} both become {name!r}; "
                "list event_types without one of them"
            )
        names[event_type] = name
    return names


def discover_event_types(events: ibis.Table, config: FeatureConfig) -> tuple[str, ...]:
    """The event types that get per-type features.

    ``config.event_types`` when given; otherwise the ``config.max_event_types`` most
    frequent types of ``events`` (ties broken by name), which runs one small query.

    Parameters
    ----------
    events : ibis.Table
    config : FeatureConfig

    Returns
    -------
    tuple of str
        Sorted by name, so the column order does not move when frequencies change.
    """
    if config.event_types is not None:
        return tuple(sorted(config.event_types))
    counts = (
        events.group_by("event_type")
        .aggregate(n=events.count())
        .order_by([ibis.desc("n"), "event_type"])
        .limit(config.max_event_types)
    )
    return tuple(sorted(counts.execute()["event_type"].astype(str)))


def feature_columns(table_or_frame: ir.Table | pd.DataFrame) -> list[str]:
    """The feature columns of a feature table or frame: all but the keys, in order.

    Parameters
    ----------
    table_or_frame : ibis.Table or pandas.DataFrame

    Returns
    -------
    list of str
    """
    return [c for c in table_or_frame.columns if c not in KEY_COLUMNS]


def _days(age_us: ir.IntegerValue) -> ir.FloatingValue:
    return age_us.cast("float64") / _US_PER_DAY


def _count_if(condition: ir.BooleanValue) -> ir.IntegerScalar:
    # COUNT(CASE ...) rather than COUNT(*) FILTER: see the module docstring.
    return ibis.ifelse(condition, ibis.literal(1, "int8"), ibis.null("int8")).count()


def _one_bit(position: ir.IntegerValue) -> ir.IntegerValue:
    # The shift count as INTEGER: PostgreSQL has ``bigint << integer`` only (no bigint count).
    return ibis.literal(1).cast("int64") << position.cast("int32")


def _fmt(half_life: float) -> str:
    """``7.0`` -> ``"7"``, ``1.5`` -> ``"1.5"``: whole-day half-lives keep short names."""
    return f"{half_life:g}"


class _Plan:
    """Names and bit layout of one build, derived from the config and the event types.

    Active days use a bit vector per (row, type): bit ``d`` for a calendar day ``d`` days
    before ``as_of``'s date (``d < max window``), then one "edge" bit per active-days
    window. It is stored as ``words`` BIGINTs of 63 bits and OR-ed per type.
    """

    def __init__(self, config: FeatureConfig, event_types: Sequence[str]) -> None:
        self.config = config
        self.names = _type_names(event_types)
        self.windows = config.windows_days
        self.active_windows = config.resolved_active_days_windows
        self.momentum = config.momentum_days
        # Windows counted per type at level 1: the features' and momentum's two.
        self.count_windows = sorted({*self.windows, self.momentum, 2 * self.momentum})
        self.day_bits = max(self.active_windows)
        self.words = -(-(self.day_bits + len(self.active_windows)) // _WORD_BITS)  # ceil
        self.trend = config.trend_windows
        unknown = sorted(set(config.monetary_types) - set(self.names))
        if unknown:
            raise ValueError(
                f"monetary_types {unknown} are not among the feature's event types "
                f"{sorted(self.names)}: list them in event_types or drop them"
            )
        # Ordered as the types, so the columns do not move with the config's order.
        self.monetary = tuple(t for t in self.names if t in config.monetary_types)

    def edge_bit(self, k: int) -> int:
        """Position of the edge bit of the k-th active-days window."""
        return self.day_bits + k


def _spine_rows(spine: ibis.Table) -> ibis.Table:
    # A duplicated spine row would double every count.
    return spine.select(
        contact_id=spine.contact_id.cast("string"), as_of=spine.as_of.cast(TIMESTAMP_US)
    ).distinct()


def _event_columns(events: ibis.Table) -> ibis.Table:
    account = (
        events.account_id.cast("string") if "account_id" in events.columns else ibis.null("string")
    )
    return events.select(
        _contact=events.contact_id.cast("string"),
        _type=events.event_type.cast("string"),
        _ts=events.ts.cast(TIMESTAMP_US),
        _value=events.value.cast("float64"),
        _account=account,
    )


def _history(rows: ibis.Table, events: ibis.Table, plan: _Plan) -> ibis.Table:
    """Feature rows (:func:`propensity.features.accounts.feature_rows`) x their contact's
    events before ``as_of`` (one NULL row when none).

    Per-row helpers are computed here once instead of inside every aggregate. ``_m_account``
    is the account an event counts for in account features (see ``features/accounts.py``).
    """
    ev = _event_columns(events)
    joined = rows.left_join(ev, [rows.contact_id == ev._contact, ev._ts < rows.as_of])
    # DATE_DIFF at microsecond unit is exactly epoch_us(as_of) - epoch_us(ts); ibis'
    # epoch_seconds() is typed int32 and would drop the fraction.
    age = joined.as_of.delta(joined._ts, unit="microsecond")
    # Calendar-day offset of the event's UTC date from as_of's date (0 = same date).
    day = joined.as_of.date().delta(joined._ts.date(), unit="day")
    helpers: dict[str, ir.Value] = {
        "_age": age,
        "_m_account": joined._c_account.coalesce(joined._account),
    }
    if plan.monetary:
        # Purchase-like events are grouped per UTC day at level 1 (see features/rfm.py).
        helpers["_pday"] = _when(joined._type.isin(list(plan.monetary)), day)
    weighted = list(plan.config.value_weighted_types)
    for i, half_life in enumerate(plan.config.half_lives_days):
        decay = ibis.literal(0.5) ** (_days(age) / half_life)
        if weighted:
            # The level-1 groups are per type, so one column serves both kinds of type.
            decay = ibis.ifelse(joined._type.isin(weighted), decay * joined._value, decay)
        helpers[f"_decay{i}"] = decay
    # A calendar day d < N days back is wholly inside the N-day window; day N only for
    # events with age <= N days, which set the window's edge bit instead.
    for j in range(plan.words):
        low, high = j * _WORD_BITS, (j + 1) * _WORD_BITS
        word = ibis.literal(0).cast("int64")
        if low < plan.day_bits:
            inside = (day >= low) & (day < min(high, plan.day_bits))
            word = word + ibis.ifelse(inside, _one_bit(day - low), 0)
        for k, n in enumerate(plan.active_windows):
            if low <= plan.edge_bit(k) < high:
                on_edge = (day == n) & (age <= n * _US_PER_DAY)
                flag = ibis.literal(1 << (plan.edge_bit(k) - low)).cast("int64")
                word = word + ibis.ifelse(on_edge, flag, 0)
        helpers[f"_word{j}"] = word
    return joined.select(
        "contact_id", "as_of", "_type", "_ts", "_value", "_account", *ACCOUNT_ROW_COLUMNS[1:], **helpers
    )


# `_c_member` and `_spine` depend on (contact_id, as_of) only: keys, so they need no aggregate.
_LEVEL1_KEYS = ("contact_id", "as_of", "_type", "_m_account", "_c_member", "_spine")


def _level1_keys(plan: _Plan) -> list[str]:
    # With purchase-like types, their level-1 rows are per day too (NULL for the other types).
    return [*_LEVEL1_KEYS, "_pday"] if plan.monetary else list(_LEVEL1_KEYS)


def _type_aggregates(h: ibis.Table, plan: _Plan) -> dict[str, ir.Scalar]:
    """Level 1, per ``(contact_id, as_of, type, member account)``: nothing names a type.

    These are the only aggregates that see every joined event row, so they are few and
    unconditional on the type; the per-type pivot runs on the (~20x fewer) group rows. The
    member account is one per contact unless a contact without a contacts-table account has
    events with several ``account_id``s; the level-1 rows then also serve the account
    features (:func:`_account_features`).
    """
    aggs: dict[str, ir.Scalar] = {}
    for n in plan.count_windows:
        aggs[f"_n{n}"] = _count_if(h._age <= n * _US_PER_DAY)
    aggs["_age_min"] = h._age.min()
    aggs["_age_max"] = h._age.max()
    aggs["_n_total"] = h._ts.count()  # the NULL row of a contact without history counts 0
    for i in range(len(plan.config.half_lives_days)):
        aggs[f"_decay{i}"] = h[f"_decay{i}"].sum()
    for j in range(plan.words):
        aggs[f"_word{j}"] = h[f"_word{j}"].bit_or()
    for n in plan.windows:
        aggs[f"_vsum{n}"] = _when(h._age <= n * _US_PER_DAY, h._value).sum()
        aggs[f"_vmax{n}"] = _when(h._age <= n * _US_PER_DAY, h._value).max()
    # When the latest event naming an account was. Its account is not picked here: for a
    # contact without a contacts-table account it is the group's member account (a key), and
    # an aggregate over strings (ARG_MAX) would make Spark sort every joined event row
    # (SortAggregate) instead of hashing them. Level 2 picks it (_contact_aggregates).
    aggs["_acc_ts"] = _when(h._account.notnull(), h._ts).max()
    if plan.monetary:
        aggs["_pv"] = _when(h._pday.notnull(), h._value.fill_null(0.0)).sum()
    return aggs


def _contact_aggregates(t: ibis.Table, plan: _Plan) -> dict[str, ir.Scalar]:
    """Level 2, per ``(contact_id, as_of)`` over the level-1 rows (one per type seen).

    Raw, before fill-ins. A type usually has one level-1 row per contact and ``as_of``, but
    may have one per member account, so values are combined, not picked.
    """
    aggs: dict[str, ir.Scalar] = {}
    for event_type, name in plan.names.items():
        is_type = t._type == event_type
        for n in plan.windows:
            aggs[f"{name}__count_{n}d"] = _sum_count(_when(is_type, t[f"_n{n}"]))
        aggs[f"{name}__days_since_last"] = _when(is_type, t._age_min).min()
        if plan.config.lifetime_features:
            aggs[f"_{name}__n_total"] = _sum_count(_when(is_type, t._n_total))
            aggs[f"_{name}__age_max"] = _when(is_type, t._age_max).max()
        for i, half_life in enumerate(plan.config.half_lives_days):
            aggs[f"{name}__decayed_{_fmt(half_life)}d"] = _when(is_type, t[f"_decay{i}"]).sum()
        for j in range(plan.words):
            aggs[f"_{name}__word{j}"] = _when(is_type, t[f"_word{j}"]).bit_or()
    for n in plan.count_windows:
        aggs[f"_all_n{n}"] = _sum_count(t[f"_n{n}"])
    aggs["all__days_since_last"] = t._age_min.min()
    for n in plan.windows:
        aggs[f"value__sum_{n}d"] = t[f"_vsum{n}"].sum()
    for n in plan.windows:
        aggs[f"value__max_{n}d"] = t[f"_vmax{n}"].max()
    aggs["tenure_days"] = t._age_max.max()
    # The account of the latest event naming one: the member account of its level-1 row, for
    # a contact without a contacts-table account (whose own account wins otherwise, in
    # with_attributes). NULL keys never win.
    aggs["_event_account"] = _when(t._acc_ts.notnull(), t._m_account).argmax(t._acc_ts)
    return aggs


def _sum_count(counts: ir.IntegerColumn) -> ir.IntegerScalar:
    # Through float (exact below 2**53): DuckDB sums BIGINT into HUGEINT, and Ibis drops a
    # same-type cast, so a plain .cast("int64") would leave a HUGEINT column.
    return counts.sum().cast("float64").cast("int64")


def _active_days(agg: ibis.Table, plan: _Plan, name: str, k: int) -> ir.IntegerValue:
    """Days 0 .. N-1 set in the type's words, plus its edge bit for window k."""
    n = plan.active_windows[k]
    words = [agg[f"_{name}__word{j}"].fill_null(0) for j in range(plan.words)]
    edge_word, edge_pos = divmod(plan.edge_bit(k), _WORD_BITS)
    total = ((words[edge_word] >> edge_pos) & 1).cast("int64")
    for j in range(-(-n // _WORD_BITS)):
        bits = min(n - j * _WORD_BITS, _WORD_BITS)
        total = total + _bit_count(words[j] & ((1 << bits) - 1)).cast("int64")
    return total


def _contact_features(agg: ibis.Table, plan: _Plan) -> dict[str, ir.Value]:
    """Feature columns, in order, from the raw aggregates: days, fill-ins, derived ones."""
    out: dict[str, ir.Value] = {}
    for name in plan.names.values():
        for n in plan.windows:
            out[f"{name}__count_{n}d"] = agg[f"{name}__count_{n}d"].fill_null(0)
        out[f"{name}__days_since_last"] = _days(agg[f"{name}__days_since_last"])
        for half_life in plan.config.half_lives_days:
            column = f"{name}__decayed_{_fmt(half_life)}d"
            out[column] = agg[column].fill_null(0.0)
        for k, n in enumerate(plan.active_windows):
            out[f"{name}__active_days_{n}d"] = _active_days(agg, plan, name, k)
        out.update(_lifetime_features(agg, plan, name, out))
        if name in {plan.names[t] for t in plan.monetary}:
            out.update(purchase_features(agg, name))
    for n in plan.windows:
        out[f"all__count_{n}d"] = agg[f"_all_n{n}"]
    out["all__days_since_last"] = _days(agg.all__days_since_last)
    # Cast literals: Ibis writes a literal 1 bare (INTEGER to DuckDB) whatever its Ibis type,
    # and drops a cast of an expression it already types int64, so only these make BIGINT.
    one, zero = ibis.literal(1).cast("int64"), ibis.literal(0).cast("int64")
    for n in plan.windows:
        seen = [
            ibis.ifelse(out[f"{name}__count_{n}d"] > 0, one, zero) for name in plan.names.values()
        ]
        out[f"all__distinct_types_{n}d"] = sum(seen[1:], seen[0]) if seen else zero
    for n in plan.windows:
        out[f"value__sum_{n}d"] = agg[f"value__sum_{n}d"].fill_null(0.0)
    for n in plan.windows:
        # NULL when the window is empty: 0 would read as an observed value.
        out[f"value__max_{n}d"] = agg[f"value__max_{n}d"]
    out["tenure_days"] = _days(agg.tenure_days)
    m = plan.momentum
    recent, within = agg[f"_all_n{m}"], agg[f"_all_n{2 * m}"]
    before = within - recent
    out[f"all__momentum_{m}d"] = ibis.ifelse(
        within == 0, 0.0, (recent - before).cast("float64") / within.cast("float64")
    )
    return out


def _lifetime_features(
    agg: ibis.Table, plan: _Plan, name: str, out: dict[str, ir.Value]
) -> dict[str, ir.Value]:
    """Per type: all-history count, days since the first event, mean gap, trend."""
    features: dict[str, ir.Value] = {}
    if plan.config.lifetime_features:
        total = agg[f"_{name}__n_total"].fill_null(0)
        first, last = agg[f"_{name}__age_max"], agg[f"{name}__days_since_last"]
        features[f"{name}__count_total"] = total
        features[f"{name}__days_since_first"] = _days(first)
        # First to last over the gaps between them: exact from the aggregates, no window
        # function (a LAG over the joined events would sort them all).
        features[f"{name}__mean_gap_days"] = _when(
            total > 1, _days(first - last) / (total - 1).cast("float64")
        )
    if plan.trend is not None:
        short, long = plan.trend
        recent, within = out[f"{name}__count_{short}d"], out[f"{name}__count_{long}d"]
        # Rate per day in the short window over the long window's: 1 = steady, above = rising.
        features[f"{name}__trend_{short}d_{long}d"] = _when(
            within > 0, (recent * long).cast("float64") / (within * short).cast("float64")
        )
    return features


def build_features(
    events: ibis.Table,
    spine: ibis.Table,
    config: FeatureConfig,
    *,
    contacts: ibis.Table | None = None,
    event_types: Sequence[str] | None = None,
    contact_history: ibis.Table | None = None,
) -> ibis.Table:
    """The point-in-time feature table of ``spine`` as one lazy Ibis expression.

    Parameters
    ----------
    events : ibis.Table
        Canonical events (``contact_id``, ``event_type``, ``ts``, ``value``, ``account_id``).
    spine : ibis.Table
        ``(contact_id, as_of)`` rows; each row gets features as of its own ``as_of``.
        Duplicate rows are collapsed.
    config : FeatureConfig
    contacts : ibis.Table, optional
        Canonical contacts, one row per ``contact_id``: ``account_id`` (preferred over the
        events' ``account_id``) and the attribute columns.
    event_types : sequence of str, optional
        Overrides ``config.event_types``. When both are None the types are discovered with
        :func:`discover_event_types`, which runs one small query; pass the types to keep the
        build fully lazy and the columns fixed between training and scoring.
    contact_history : ibis.Table, optional
        The contacts' attribute history (``features/history.py``): with it (and
        ``config.attributes.values`` ``as_of``) each row's attributes are those valid at its
        ``as_of``; without it, the contacts' latest values.

    Returns
    -------
    ibis.Table
        Keys ``contact_id``, ``as_of``, ``account_id``; then per type (in the given order)
        ``count_{N}d``, ``days_since_last``, ``decayed_{H}d``, ``active_days_{N}d``,
        ``count_total``, ``days_since_first``, ``mean_gap_days`` (``lifetime_features``),
        ``trend_{S}d_{L}d`` (``trend_features``) and, for purchase-like types,
        ``rfm_frequency``, ``rfm_recency_days``, ``rfm_tenure_days``, ``rfm_monetary``,
        ``value_total``; then
        ``all__count_{N}d``, ``all__days_since_last``, ``all__distinct_types_{N}d``,
        ``value__sum_{N}d``, ``value__max_{N}d``, ``tenure_days``, ``all__momentum_{M}d``;
        then ``account__active_contacts_{N}d``, ``account__count_{N}d``,
        ``account__contacts``; then with ``purchase_history_features`` the columns of
        :func:`propensity.features.purchase_history.purchase_history_columns`; then, per type of
        ``value_stats_types`` / ``value_thresholds``, ``value_mean``, ``value_min``, ``value_max``,
        ``value_last``, ``count_value_below_{T}`` (:mod:`propensity.features.value_stats`); then the
        contacts' attribute columns (``config.attributes``:
        identifier-like columns are left out unless included).

    Notes
    -----
    Counts are int64 and 0 when nothing happened; days, decayed sums, value sums and maxima
    and momentum are float64. ``days_since_last``, ``tenure_days`` and ``value__max_{N}d``
    are NULL without an event (in the window); decayed and value sums are 0.
    ``mean_gap_days`` is NULL below two events, ``trend`` without an event in the longest
    window, the ``rfm_*`` columns without a purchase. ``"auto"`` settings are resolved with
    :func:`propensity.features.auto.resolve_feature_config` (small queries) unless the
    config given is resolved already, as a trained model's is.
    ``all__distinct_types_{N}d`` counts the feature's event types (given or discovered)
    seen in the window. A row's ``account_id`` is the contacts table's, else the
    ``account_id`` of the contact's latest event before ``as_of``; account features are 0
    without one. ``account__contacts`` counts the account's contacts known at ``as_of``
    (as in :func:`propensity.features.spine.spine_at`).
    """
    if event_types is None:
        event_types = discover_event_types(events, config)
    config, _ = resolve_feature_config(config, events, event_types)
    plan = _Plan(config, event_types)

    base = _spine_rows(spine)
    rows = feature_rows(base, events, contacts, accounts=config.account_features)
    history = _history(rows, events, plan)
    by_type = history.group_by(_level1_keys(plan)).aggregate(**_type_aggregates(history, plan))
    by_type = with_purchase_days(by_type, plan.monetary)
    if config.account_features:
        by_type = with_account_windows(by_type, plan.windows)
    # The members that only feed the account windows leave here.
    mine = by_type.filter(by_type._spine)
    aggregates = {**_contact_aggregates(mine, plan), **purchase_aggregates(mine, plan.monetary, plan.names)}
    if config.account_features:
        aggregates.update(account_picks(mine, plan.windows))
    raw = mine.group_by(["contact_id", "as_of"]).aggregate(**aggregates)
    features = _contact_features(raw, plan)
    if config.account_features:
        # 0 rather than NULL without an account (or without members yet): counts stay int64
        # and "no colleagues" reads the same either way.
        for name in account_names(plan.windows):
            features[name] = raw[f"_{name}"].fill_null(0)
    feats = raw.select("contact_id", "as_of", "_event_account", **features)
    names = list(features)
    if config.purchase_history_features and plan.monetary:
        feats, added = with_purchase_history(feats, events, base, plan.names, plan.monetary)
        names += added
    feats, value_stats = with_value_stats(feats, base, events, config, plan.names)  # features/value_stats.py
    names += value_stats
    attributes = attribute_columns(contacts, config)  # the guard: features/attributes.py
    clash = sorted(set(attributes) & {*names, *KEY_COLUMNS})
    if clash:
        raise ValueError(f"contact attribute columns clash with feature names: {clash}")
    table = with_attributes(feats, contacts, attributes,
                            contact_history if config.attributes.values == "as_of" else None)
    return table.select(*KEY_COLUMNS, *names, *attributes)

