"""A model's feature query kept as compiled SQL (training/as_trained_sql.py) gives the frame Ibis
compiles, for the whole spine and for one contact, and is used again only for the same key."""

import dataclasses
import shutil
from contextlib import closing

import pandas as pd
import pandas.testing as pdt
import pytest

from propensity.features.history import history_table
from propensity.features.spine import spine_at, spine_from_frame
from propensity.features.store import Workspace
from propensity.pipelines.training import as_trained_sql
from propensity.pipelines.training.as_trained import features_as_trained, features_frame
from propensity.pipelines.training.as_trained_sql import (
    features_frame_as_trained,
    query_key,
)

pytestmark = pytest.mark.slow

KEYS = ["contact_id", "as_of"]


@pytest.fixture(scope="module")
def as_of(world):
    return pd.Timestamp(world.result.test_scores["as_of"].max())


def _tables(con):
    return con.table("events"), con.table("contacts"), history_table(con)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEYS, kind="stable").reset_index(drop=True)


def test_the_kept_query_gives_the_compiled_frame_for_everyone_and_for_one_contact(world, as_of, tmp_path,
                                                                                   monkeypatch):
    scorer = world.result.scorer
    con = world.ws.ibis_connection()
    events, contacts, history = _tables(con)
    everyone = spine_at(events, as_of, contacts=contacts)  # an expression: written to a temporary table
    expected = _sorted(features_frame(features_as_trained(events, everyone, scorer, contacts, history)))
    compiled = _sorted(features_frame_as_trained(events, everyone, scorer, contacts, history, folder=tmp_path))
    assert len(list(tmp_path.glob("*.json"))) == 1
    pdt.assert_frame_equal(compiled, expected, check_exact=False, rtol=1e-12)

    # the kept text is run again without building or compiling anything (a spine of one contact)
    def no_compile(*args, **kwargs):
        raise AssertionError("the kept query should have been used")

    monkeypatch.setattr(as_trained_sql, "features_as_trained", no_compile)
    contact = str(expected["contact_id"].iloc[len(expected) // 2])
    one = spine_from_frame(con, pd.DataFrame({"contact_id": [contact], "as_of": [as_of]}))
    kept = features_frame_as_trained(events, one, scorer, contacts, history, folder=tmp_path)
    row = expected[expected["contact_id"] == contact].reset_index(drop=True)
    assert len(kept) == 1
    pdt.assert_frame_equal(kept, row, check_exact=False, rtol=1e-12)
    again = features_frame_as_trained(events, spine_at(events, as_of, contacts=contacts), scorer, contacts, history,
                                      folder=tmp_path)
    pdt.assert_frame_equal(_sorted(again), expected, check_exact=False, rtol=1e-12)


def test_the_key_follows_the_model_and_the_schemas_not_the_spine_name(world, as_of):
    scorer = world.result.scorer
    con = world.ws.ibis_connection()
    events, contacts, history = _tables(con)
    a, b = (spine_from_frame(con, pd.DataFrame({"contact_id": [c], "as_of": [as_of]})) for c in ("x1", "x2"))
    key = query_key(scorer, events, a, contacts, history)
    assert query_key(scorer, events, b, contacts, history) == key  # another spine table, the same text
    assert query_key(scorer, events, a, None, None) != key  # no contacts: another query
    fewer = dataclasses.replace(scorer, event_types=tuple(scorer.event_types)[:-1])
    assert query_key(fewer, events, a, contacts, history) != key
    wider = con.create_table("_wider_contacts", contacts.mutate(extra=contacts.contact_id), temp=True)
    assert query_key(scorer, events, a, wider, history) != key  # a new contacts column


def test_events_after_the_cut_off_move_nothing_through_the_kept_query(world, as_of, tmp_path):
    """Point in time holds in the kept text too: a copy of the workspace with events after as_of
    (the same schemas, so the same key) gives the same rows from the same entry."""
    scorer = world.result.scorer
    with closing(world.ws.connect()) as raw:
        raw.execute("CHECKPOINT")
    copy = tmp_path / "ws"
    shutil.copytree(world.ws.path, copy, ignore=shutil.ignore_patterns("*.wal", "cache"))
    folder = tmp_path / "queries"
    con = world.ws.ibis_connection()
    events, contacts, history = _tables(con)
    contacts_ids = sorted(features_frame(spine_at(events, as_of, contacts=contacts))["contact_id"])[:40]
    frame = pd.DataFrame({"contact_id": contacts_ids, "as_of": [as_of] * len(contacts_ids)})
    before = features_frame_as_trained(events, spine_from_frame(con, frame), scorer, contacts, history, folder=folder)

    later = Workspace(copy)
    with closing(later.connect()) as raw:
        added = raw.execute(
            "INSERT INTO events SELECT * REPLACE (ts + to_days(CAST(1 + hash(event_id) % 20 AS INTEGER)) "
            "+ (CAST(? AS TIMESTAMP) - (SELECT min(ts) FROM events)) AS ts, event_id || '-late' AS event_id) "
            "FROM events WHERE list_contains(?, contact_id)", [as_of.to_pydatetime(), contacts_ids]).fetchall()
        assert added[0][0] > 0
        assert raw.execute("SELECT count(*) FROM events WHERE ts >= ?", [as_of.to_pydatetime()]).fetchone()[0] > 0
    con2 = later.ibis_connection()
    events2, contacts2, history2 = _tables(con2)
    assert query_key(scorer, events2, spine_from_frame(con2, frame), contacts2, history2) == \
        query_key(scorer, events, spine_from_frame(con, frame), contacts, history)
    after = features_frame_as_trained(events2, spine_from_frame(con2, frame), scorer, contacts2, history2,
                                      folder=folder)
    assert len(list(folder.glob("*.json"))) == 1
    pdt.assert_frame_equal(_sorted(after), _sorted(before), check_exact=False, rtol=1e-12)


def test_a_folder_that_cannot_be_written_only_costs_the_compile(world, as_of, tmp_path):
    scorer = world.result.scorer
    con = world.ws.ibis_connection()
    events, contacts, history = _tables(con)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    one = spine_from_frame(con, pd.DataFrame({"contact_id": ["nobody-known"], "as_of": [as_of]}))
    frame = features_frame_as_trained(events, one, scorer, contacts, history, folder=blocked / "queries")
    pdt.assert_frame_equal(frame, features_frame(features_as_trained(events, one, scorer, contacts, history)),
                           check_exact=False, rtol=1e-12)


def test_the_columns_no_tree_reads_move_no_score(world, as_of):
    """``score --model`` builds only ``columns_read``: the model's other columns set to NaN give the
    same scores, bit for bit, and the scores it writes are those of the full frame."""
    from propensity.pipelines.jobs import SpineChoice, run_model_scores

    scorer = world.result.scorer
    con = world.ws.ibis_connection()
    events, contacts, history = _tables(con)
    full = _sorted(features_frame(features_as_trained(events, spine_at(events, as_of, contacts=contacts), scorer,
                                                      contacts, history)))
    read = scorer.columns_read()
    assert 0 < len(read) < len(scorer.feature_names)
    unread = [c for c in scorer.feature_names if c not in read]
    blanked = full.copy()
    blanked[unread] = float("nan")
    expected = scorer.score(full[scorer.feature_names])
    pdt.assert_frame_equal(scorer.score(blanked[scorer.feature_names]), expected, check_exact=True)
    written = run_model_scores(world.ws, SpineChoice(as_of=as_of.to_pydatetime(), spine=None), world.version,
                               world.model_name, scorer=scorer)
    assert list(written["contact_id"]) == list(full["contact_id"])
    pdt.assert_frame_equal(written[["probability", "learned_score"]], expected.reset_index(drop=True),
                           check_exact=False, rtol=1e-9)
