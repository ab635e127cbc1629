"""Account features inside the one pass over the events: member rows and window aggregates.

An event counts for its contact's account in the contacts table, else for its own
``account_id``; a contacts-table row makes a member from ``created_at`` (NULL: always). The
account features of a spine row are aggregates over the members of its account at its
``as_of`` (see :func:`propensity.features.build.build_features`).

How they are computed, so that the events are joined to the rows once:

1. :func:`feature_rows`: the spine rows plus, per ``(account, as_of)`` of a spine row, the
   account's other members at that ``as_of`` (contacts-table members and contacts whose own
   events name the account), each flagged ``_spine`` or not. The level-1 aggregate of the
   build then runs over all of them.
2. :func:`with_account_windows`: on the level-1 rows (one per row, type and member account),
   window aggregates per ``(member account, as_of)``: the account's counts, and per member
   a weight of 1 / (its level-1 rows) for the distinct-contact counts.
3. :func:`account_picks`: level 2 keeps the spine rows and picks, per contact, the values of
   its account's partition.

Why windows and no join back: Spark does not materialise a subquery used twice (Ibis writes a
CTE, Spark inlines it), so the earlier shape (account keys from the finished feature rows,
member statistics from level 1, joined back) computed the whole build four times over and read
the events 16 times (``benchmarks/plan_scans.py``). A tree reads them once per branch.
"""

from __future__ import annotations

from collections.abc import Sequence

import ibis
import ibis.expr.types as ir

from propensity.features.spine import TIMESTAMP_US

__all__ = ["ACCOUNT_ROW_COLUMNS", "account_names", "account_picks", "feature_rows", "with_account_windows"]

_US_PER_DAY = 86_400_000_000
# The columns every row of feature_rows has, besides contact_id and as_of.
ACCOUNT_ROW_COLUMNS = ("_c_account", "_c_member", "_spine")


def account_names(windows: Sequence[int]) -> list[str]:
    """The account feature columns, in order."""
    return (
        [f"account__active_contacts_{n}d" for n in windows]
        + [f"account__count_{n}d" for n in windows]
        + ["account__contacts"]
    )


def _contacts_accounts(contacts: ibis.Table | None) -> ibis.Table | None:
    """``(_c_contact, _c_account, _c_created)`` of the contacts table, None without accounts."""
    if contacts is None or "account_id" not in contacts.columns:
        return None
    created = (
        contacts.created_at.cast(TIMESTAMP_US)
        if "created_at" in contacts.columns
        else ibis.null(TIMESTAMP_US)
    )
    return contacts.select(
        _c_contact=contacts.contact_id.cast("string"),
        _c_account=contacts.account_id.cast("string"),
        _c_created=created,
    )


def _known_by(created: ir.TimestampValue, as_of: ir.TimestampValue) -> ir.BooleanValue:
    return created.isnull() | (created < as_of)


def _unlisted_events(events: ibis.Table, known: ibis.Table | None, prefix: str) -> ibis.Table | None:
    """``({prefix}contact, {prefix}ts, {prefix}account)``: the events that name an account, of
    contacts without a contacts-table account (theirs is the account their events count for).

    Filtered by the (small) contacts table first, so that Spark joins only these events with
    the rows instead of shuffling every event. ``prefix`` tells the two uses apart: one shared
    expression would become a CTE that DuckDB materialises (up to every event).
    """
    if "account_id" not in events.columns:
        return None
    ev = events.select(
        **{
            f"{prefix}contact": events.contact_id.cast("string"),
            f"{prefix}ts": events.ts.cast(TIMESTAMP_US),
            f"{prefix}account": events.account_id.cast("string"),
        }
    )
    ev = ev.filter(ev[f"{prefix}account"].notnull())
    if known is None:
        return ev
    listed = known.filter(known._c_account.notnull())
    return ev.anti_join(listed, ev[f"{prefix}contact"] == listed._c_contact)


def feature_rows(
    base: ibis.Table, events: ibis.Table, contacts: ibis.Table | None, *, accounts: bool
) -> ibis.Table:
    """The rows whose events level 1 aggregates: ``(contact_id, as_of, _c_account, _c_member, _spine)``.

    ``_c_account`` is the contacts table's account, ``_c_member`` whether the contact is a
    member of it by ``created_at``, ``_spine`` whether the row is a spine row. With
    ``accounts``, the members of the spine rows' accounts are added (``_spine`` False), once
    per ``(contact, as_of)``: contacts-table members of an account of a spine row, and
    contacts outside the contacts table's accounts whose events before ``as_of`` name it.
    A spine of everyone known at ``as_of`` already holds every member, so then none is added.
    """
    known = _contacts_accounts(contacts)
    if known is None:
        spine = base.mutate(
            _c_account=ibis.null("string"), _c_member=ibis.literal(False), _spine=ibis.literal(True)
        )
    else:
        # On the spine's rows rather than the events': 100k rows instead of 10M.
        linked = base.left_join(known, base.contact_id == known._c_contact)
        spine = linked.select(
            "contact_id",
            "as_of",
            "_c_account",
            _c_member=linked._c_account.notnull() & _known_by(linked._c_created, linked.as_of),
            _spine=ibis.literal(True),
        )
    if not accounts:
        return spine
    members = _account_members(events, known)
    if members is None:
        return spine
    keys = _spine_account_keys(spine, events, known)
    # One join of the keys with every way to be a member (a second use of `keys` would be
    # computed again on Spark, spine included).
    linked = keys.join(
        members,
        [
            keys._k_account == members._j_account,
            members._j_ts.isnull() | (members._j_ts < keys._k_as_of),
        ],
    )
    table_member = linked._j_ts.isnull()
    found = linked.select(
        contact_id=linked._j_contact,
        as_of=linked._k_as_of,
        _c_account=ibis.ifelse(table_member, linked._j_account, ibis.null("string")),
        # Those created at or after as_of are members only by their events (level 1 finds them).
        _c_member=table_member & _known_by(linked._j_created, linked._k_as_of),
        _spine=ibis.literal(False),
    )
    rows = spine.union(found, distinct=False)
    # One row per (contact, as_of): a spine row stays one, members found twice count once.
    # MAX over 0/1 rather than over booleans: PostgreSQL has no MAX(boolean) and no boolean to
    # smallint cast.
    return rows.group_by(["contact_id", "as_of"]).aggregate(
        _c_account=rows._c_account.max(),
        _c_member=ibis.ifelse(rows._c_member, 1, 0).max() == 1,
        _spine=ibis.ifelse(rows._spine, 1, 0).max() == 1,
    )


def _account_members(events: ibis.Table, known: ibis.Table | None) -> ibis.Table | None:
    """``(_j_contact, _j_account, _j_created, _j_ts)``: who may be a member of an account.

    Contacts-table members (``_j_ts`` NULL: all their events count for the account), and the
    events naming an account of contacts without a contacts-table one (``_j_ts`` the event's).
    """
    parts = []
    if known is not None:
        table = known.filter(known._c_account.notnull())
        parts.append(
            table.select(
                _j_contact=table._c_contact,
                _j_account=table._c_account,
                _j_created=table._c_created,
                _j_ts=ibis.null(TIMESTAMP_US),
            )
        )
    named = _unlisted_events(events, known, "_e_")
    if named is not None:
        parts.append(
            named.select(
                _j_contact=named._e_contact,
                _j_account=named._e_account,
                _j_created=ibis.null(TIMESTAMP_US),
                _j_ts=named._e_ts,
            )
        )
    if not parts:
        return None
    return parts[0].union(*parts[1:], distinct=False) if len(parts) > 1 else parts[0]


def _spine_account_keys(spine: ibis.Table, events: ibis.Table, known: ibis.Table | None) -> ibis.Table:
    """``(_k_account, _k_as_of)``: every account a spine row may have at its ``as_of``.

    The contacts table's account, else the accounts its events before ``as_of`` name (a
    superset of the latest one's, which is the row's account: the others only cost work).
    """
    named = _unlisted_events(events, known, "_u_")
    if named is None:
        accounts = spine.select(_k_account=spine._c_account, _k_as_of=spine.as_of)
    else:
        # The spine rows without a contacts-table account are those whose events' rows join.
        joined = spine.left_join(
            named, [spine.contact_id == named._u_contact, named._u_ts < spine.as_of]
        )
        accounts = joined.select(
            _k_account=joined._c_account.coalesce(joined._u_account), _k_as_of=joined.as_of
        )
    return accounts.filter(accounts._k_account.notnull()).distinct()


def with_account_windows(by_type: ibis.Table, windows: Sequence[int]) -> ibis.Table:
    """Level-1 rows plus their member account's aggregates at ``as_of`` (NULL without one).

    A member is a contact with an event counting for the account before ``as_of`` (a level-1
    row with a type) or a contacts-table member by ``created_at``. Distinct contacts are
    counted by giving each of a member's level-1 rows the weight 1 / (its rows): the weights of
    one member sum to 1, so the account's sum, rounded, is its number of members. That needs
    only unordered windows: a ROW_NUMBER picking one row per member sorted every level-1 row
    and was the larger part of the account features' cost on DuckDB (0.22 -> 0.16 s CPU over
    the 90k level-1 rows of 2M events). The float sums are exact after rounding: the error of
    a sum of n weights is about n * 1e-16, far below 0.5 for any account.
    """
    member = ibis.window(group_by=["contact_id", "as_of", "_m_account"])
    is_member = by_type._type.notnull() | by_type._c_member
    t = by_type.mutate(
        _w_weight=ibis.literal(1.0) / by_type.contact_id.count().over(member).cast("float64"),
        # a 0/1 integer, not a boolean: PostgreSQL has no MAX(boolean)
        _w_member=ibis.ifelse(is_member, 1, 0).max().over(member) == 1,
        _w_recent=by_type._age_min.min().over(member),
    )
    account = ibis.window(group_by=["_m_account", "as_of"])
    no_weight = ibis.literal(0.0)
    values: dict[str, ir.Value] = {}
    for n in windows:
        active = t._w_member & (t._w_recent <= n * _US_PER_DAY)
        values[f"account__active_contacts_{n}d"] = ibis.ifelse(active, t._w_weight, no_weight).sum().over(account).round()
    for n in windows:
        values[f"account__count_{n}d"] = t[f"_n{n}"].sum().over(account)
    values["account__contacts"] = ibis.ifelse(t._w_member, t._w_weight, no_weight).sum().over(account).round()
    no_account = t._m_account.isnull()
    # Through float (exact below 2**53): DuckDB sums BIGINT into HUGEINT and Ibis drops a
    # same-type cast (see build._sum_count).
    return t.mutate(
        **{
            name: ibis.ifelse(no_account, ibis.null("int64"), value.cast("float64").cast("int64"))
            for name, value in values.items()
        }
    )


def account_picks(t: ibis.Table, windows: Sequence[int]) -> dict[str, ir.Scalar]:
    """Level 2 (per contact and ``as_of``): the account features of the row's account.

    The row's account is the contacts table's (every level-1 row of the contact has it) else
    that of its latest event naming one, whose level-1 row has the largest ``_acc_ts``.
    """
    picks: dict[str, ir.Scalar] = {}
    for name in account_names(windows):
        picks[f"_{name}"] = t[name].argmax(t._acc_ts).coalesce(t[name].max())
    return picks
