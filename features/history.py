"""The contacts' attribute history: every version of a contact ingest has seen, never overwritten.

``contacts`` holds each contact's latest attributes (the upsert of :mod:`features.loading`);
``contact_history`` keeps one row per version: the whole contacts row as it became, with

- ``valid_from``: when the values took effect: the source's ``updated_at`` when it gives one
  (a CRM's last-modified time), else the ingest time of the change; NULL for a contact's first
  version without ``updated_at`` and for the versions a workspace held before it kept a history
  (valid since before anything was recorded: nothing earlier is known);
- ``recorded_at``: when this workspace learned them (the ingest time).

A version is written when a contact is new or a value changed; re-ingesting the same file writes
nothing. :func:`contacts_as_of` reads the state valid at a date (the latest version with
``valid_from < at``, as events count when ``ts < at``), :func:`versions_at` the same per
``(contact, as_of)`` row (point-in-time attributes for the feature build). Before a contact's first version nothing is known of it: its first version is
used, and the note says for how many contacts (this is what the workspace did before, for all of
them). Everything here runs in SQL on the ingest's own connection (inside its transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb
import ibis
import ibis.expr.types as ir
import pandas as pd

from propensity.features.spine import TIMESTAMP_US
from propensity.features.values import quote_ident, quote_literal

__all__ = ["HISTORY_TABLE", "ContactsAt", "contacts_as_of", "contacts_at_rows", "has_history", "history_table", "prepare",
           "record_versions", "valid_from_sql", "values_note", "versions_at", "with_attributes"]

HISTORY_TABLE = "contact_history"
_BEFORE_ANYTHING = datetime(1900, 1, 1)


def _types(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    return {r[0]: r[1] for r in con.execute(f"DESCRIBE {table}").fetchall()}


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()
    return {r[0] for r in rows}


def _ensure(con: duckdb.DuckDBPyConnection, now: datetime) -> None:
    """Create the history (seeded with the contacts a pre-history workspace holds) and give it every
    contacts column, with the contacts' (widened) types."""
    if HISTORY_TABLE not in _tables(con):
        con.execute(f"CREATE TABLE {HISTORY_TABLE} AS SELECT CAST(NULL AS TIMESTAMP) AS valid_from, "
                    "CAST(NULL AS TIMESTAMP) AS recorded_at, * FROM contacts WHERE false")
        # the values held before the history began: valid since before anything was recorded
        con.execute(f"INSERT INTO {HISTORY_TABLE} SELECT NULL, {quote_literal(now.isoformat(sep=' '))}::TIMESTAMP, "
                    "* FROM contacts")
        return
    mine = _types(con, HISTORY_TABLE)
    for name, sql_type in _types(con, "contacts").items():
        if name not in mine:
            con.execute(f"ALTER TABLE {HISTORY_TABLE} ADD COLUMN {quote_ident(name)} {sql_type}")
        elif mine[name] != sql_type:
            con.execute(f"ALTER TABLE {HISTORY_TABLE} ALTER COLUMN {quote_ident(name)} TYPE {sql_type}")


def record_versions(con: duckdb.DuckDBPyConnection, touched: str, now: datetime) -> None:
    """Append the new version of every contact in ``touched`` (a table of ``contact_id, valid_from``:
    the contacts the upsert added or changed, see :func:`valid_from_sql`).

    Call it twice around the upsert: :func:`prepare` before (so a pre-history workspace is seeded
    with the values it held), this after (the rows as they became).
    """
    _ensure(con, now)
    columns = list(_types(con, "contacts"))
    names = ", ".join(quote_ident(c) for c in columns)
    picked = ", ".join(f"c.{quote_ident(c)}" for c in columns)
    stamp = f"{quote_literal(now.isoformat(sep=' '))}::TIMESTAMP"
    con.execute(
        f"INSERT INTO {HISTORY_TABLE} (valid_from, recorded_at, {names}) "
        f"SELECT x.valid_from, {stamp}, {picked} "
        f"FROM contacts c JOIN {touched} x ON c.contact_id = x.contact_id"
    )


def valid_from_sql(updated_at: str, is_new: str, now: datetime) -> str:
    """When a version takes effect: the source's ``updated_at``; else, for a change, the ingest time,
    and for a contact seen for the first time NULL (nothing earlier is known of it, so its first
    values stand for its past, as they did before the workspace kept a history)."""
    stamp = f"{quote_literal(now.isoformat(sep=' '))}::TIMESTAMP"
    return f"coalesce({updated_at}, CASE WHEN {is_new} THEN NULL ELSE {stamp} END)"


def prepare(con: duckdb.DuckDBPyConnection, now: datetime) -> None:
    """Before an upsert: make sure the history exists (seeded from the contacts held so far)."""
    _ensure(con, now)


def has_history(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the workspace keeps an attribute history (any contacts ingest since it was added)."""
    return HISTORY_TABLE in _tables(con)


@dataclass(frozen=True)
class ContactsAt:
    """The contacts as they were at ``at``, and what the reading assumed."""

    frame: pd.DataFrame  # the contacts table's columns, one row per contact
    at: datetime
    versions: int  # history rows read
    before_first: int  # contacts whose first recorded version is later than `at` (taken as that version)

    def note(self) -> str:
        text = (f"attributes: as they were at {self.at:%Y-%m-%d %H:%M} from the workspace's attribute history "
                f"({self.versions:,} versions)")
        if self.before_first:
            text += (f"; {self.before_first:,} contacts were first recorded later, their first recorded values "
                     "are used")
        return text


def versions_at(history: ibis.Table, rows: ibis.Table, columns: Sequence[str]) -> ibis.Table:
    """``(contact_id, as_of, *columns)``: per ``(contact_id, as_of)`` row, the version valid at its ``as_of``.

    Valid at ``as_of`` means ``valid_from < as_of``, as an event counts when ``ts < as_of``: a change
    dated at the cut-off is not known at it. Without such a version (the contact's first one is dated
    later) the first one; a tie of dates goes to the later ingest. Rows whose contact has no version
    are left out (a left join gives them NULLs).
    """
    keys = rows.select(_k_contact=rows.contact_id.cast("string"), _k_as_of=rows.as_of.cast(TIMESTAMP_US)).distinct()
    h = history.select(_h_contact=history.contact_id.cast("string"), _valid=history.valid_from.cast(TIMESTAMP_US),
                       _recorded=history.recorded_at.cast(TIMESTAMP_US), **{c: history[c] for c in columns})
    joined = keys.inner_join(h, keys._k_contact == h._h_contact)
    start = ibis.literal(_BEFORE_ANYTHING).cast(TIMESTAMP_US)
    dated = joined._valid.coalesce(start)  # NULL: valid since before anything was recorded
    late = dated >= joined._k_as_of
    order = [late.cast("int8"), ibis.desc(ibis.ifelse(late, start, dated)), dated, ibis.desc(joined._recorded)]
    window = ibis.window(group_by=["_k_contact", "_k_as_of"], order_by=order)
    ranked = joined.mutate(_late=late, _n=ibis.row_number().over(window))
    picked = ranked.filter(ranked._n == 0)
    return picked.select(contact_id=picked._k_contact, as_of=picked._k_as_of, _late=picked._late,
                         **{c: picked[c] for c in columns})


def with_attributes(feats: ibis.Table, contacts: ibis.Table | None, attributes: Sequence[str],
                    history: ibis.Table | None = None) -> ibis.Table:
    """Add ``account_id`` (the contacts table's, else the latest event's) and the attribute columns:
    the contacts' latest values, or with ``history`` the version valid at each row's ``as_of``."""
    if contacts is None:
        return feats.rename(account_id="_event_account")
    wanted: dict[str, ir.Value] = {"_c_contact": contacts.contact_id.cast("string")}
    wanted["_c_account"] = (contacts.account_id.cast("string") if "account_id" in contacts.columns
                            else ibis.null("string"))
    if history is None:
        wanted.update({c: contacts[c] for c in attributes})
    extra = contacts.select(**wanted)
    table = feats.left_join(extra, feats.contact_id == extra._c_contact)
    keep = [c for c in feats.columns if c != "_event_account"]
    account = table._c_account.coalesce(table._event_account)
    if history is None:
        return table.select(*keep, *attributes, account_id=account)
    table = table.select(*keep, account_id=account)
    valid = versions_at(history, feats, attributes).rename(_v_contact="contact_id", _v_as_of="as_of")
    joined = table.left_join(valid, [table.contact_id == valid._v_contact, table.as_of == valid._v_as_of])
    return joined.select(*keep, *attributes, "account_id")


def contacts_at_rows(history: ibis.Table, rows: ibis.Table, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """``contact_id, as_of`` and the contacts columns (default: all of them) per ``(contact_id, as_of)``
    row of ``rows``, each the version valid at the row's ``as_of`` (:func:`versions_at`), as pandas:
    what the rule score's fit criteria read (``pipelines/rules/score.py: fit_points``). A row whose
    contact has no version is left out (it earns no fit points, as a contact missing from ``contacts``)."""
    if columns is None:
        columns = [c for c in history.columns if c not in ("valid_from", "recorded_at", "contact_id")]
    frame = versions_at(history, rows, columns).drop("_late").execute()
    frame["as_of"] = pd.to_datetime(frame["as_of"]).astype("datetime64[us]")
    return frame.sort_values(["contact_id", "as_of"], kind="stable").reset_index(drop=True)


def contacts_as_of(backend, at: datetime) -> ContactsAt | None:
    """The contacts valid at ``at`` (``valid_from < at``, see :func:`versions_at`) from the history
    (``backend``: the workspace's Ibis DuckDB backend, so the frame has the types ``contacts`` reads
    with); None when the workspace keeps none."""
    if not has_history(backend.con):
        return None
    columns = [c for c in _types(backend.con, "contacts") if c != "contact_id"]
    h = backend.table(HISTORY_TABLE)
    when = ibis.literal(pd.Timestamp(at).to_pydatetime()).cast(TIMESTAMP_US)
    ids = h.select(contact_id=h.contact_id.cast("string")).distinct().mutate(as_of=when)
    frame = versions_at(h, ids, columns).drop("as_of").order_by("contact_id").execute()
    versions = int(h.count().execute())
    late_count = int(frame.pop("_late").astype(bool).sum())
    return ContactsAt(frame=frame.reset_index(drop=True), at=pd.Timestamp(at).to_pydatetime(), versions=versions,
                      before_first=late_count)


def values_note(config, history: ibis.Table | None) -> str | None:
    """Which attribute values a build uses, in one line (None when it uses no attributes)."""
    if not config.include_attributes or config.attributes.columns == ():
        return None
    if config.attributes.values == "latest":
        return "attribute values: the contacts' latest (attributes.values: latest)"
    if history is None:
        return ("attribute values: the contacts' latest (no attribute history on this engine; a workspace's "
                "DuckDB keeps one from its contacts ingests)")
    return "attribute values: as they were at each row's as_of, from the workspace's attribute history"


def history_table(backend) -> ibis.Table | None:
    """The workspace's attribute history on ``backend`` (DuckDB), or None when it keeps none (or the
    backend is another engine, where point-in-time attributes are not available)."""
    con = getattr(backend, "con", None)
    if not isinstance(con, duckdb.DuckDBPyConnection) or not has_history(con):
        return None
    return backend.table(HISTORY_TABLE)
