"""build_features' two-level aggregation: corners the shared reference world does not reach.

The reference world gives every contact at most one account of its own, and the reference
tests mostly use spines of everyone known at ``as_of``. Here: a contact whose events name
several accounts (its level-1 rows split per account), account members that are not rows
of the spine (their statistics must come from the events, not from level 1), and the SQL
types DuckDB gives the count columns.
"""

from __future__ import annotations

from datetime import timedelta

import ibis
import pandas as pd
import pytest
from reference import ACCOUNTS, AS_OF, TYPES, make_world, reference_features, reference_known
from test_build import CONFIG, _execute, _ref_config, assert_matches_reference

from propensity.features.build import build_features, feature_columns
from propensity.features.spine import spine_at, spine_from_frame

SPLIT = ("c30", "c31")  # not in the contacts table: their events' accounts count


def _split_world(seed: int):
    """make_world with the events of SPLIT cycling through every account (and none)."""
    records = make_world(seed)
    cycle = (*ACCOUNTS, None)
    for i, event in enumerate(e for e in records.events if e["contact_id"] in SPLIT):
        event["account_id"] = cycle[i % len(cycle)]
    events, contacts = records.frames()
    con = ibis.duckdb.connect()
    return records, con, con.create_table("events", events), con.create_table("contacts", contacts)


@pytest.fixture(scope="module")
def split():
    return _split_world(3)


def test_a_contact_whose_events_name_several_accounts_matches_reference(split):
    records, _, events, contacts = split
    spine = spine_at(events, AS_OF, contacts=contacts)
    result = _execute(build_features(events, spine, CONFIG, contacts=contacts, event_types=TYPES))
    known = sorted(reference_known(records.events, AS_OF, records.contacts))
    assert set(SPLIT) <= set(known)
    expected = reference_features(
        records.events, [(c, AS_OF) for c in known], _ref_config(CONFIG), records.contacts
    )
    assert_matches_reference(result, expected)


@pytest.mark.parametrize("with_contacts", [True, False], ids=["contacts", "events-only"])
def test_account_members_outside_the_spine_are_counted_from_the_events(split, with_contacts):
    records, con, events, contacts = split
    # Few rows, at cut-offs where most colleagues are no spine row at all.
    rows = [("c01", AS_OF), ("c30", AS_OF - timedelta(days=9)), ("c31", AS_OF), ("c12", AS_OF)]
    spine = spine_from_frame(con, pd.DataFrame(rows, columns=["contact_id", "as_of"]))
    kept = contacts if with_contacts else None
    result = _execute(build_features(events, spine, CONFIG, contacts=kept, event_types=TYPES))
    expected = reference_features(
        records.events, rows, _ref_config(CONFIG), records.contacts if with_contacts else None
    )
    assert_matches_reference(result, expected)
    assert (result["account__contacts"] > 1).any()  # colleagues were found and counted


def test_every_count_column_is_bigint_in_duckdb(split):
    _, con, events, contacts = split
    spine = spine_at(events, AS_OF, contacts=contacts)
    expr = build_features(events, spine, CONFIG, contacts=contacts, event_types=TYPES)
    types = {
        name: sql_type
        for name, sql_type, *_ in con.con.execute(f"DESCRIBE {con.compile(expr)}").fetchall()
    }
    counted = ("count", "active_days", "distinct_types", "account__contacts")
    columns = [c for c in feature_columns(expr) if any(w in c for w in counted)]
    assert "all__distinct_types_7d" in columns
    assert {c: types[c] for c in columns} == {c: "BIGINT" for c in columns}
