"""Point-in-time attributes: a row's attributes are those valid at its as_of (the attribute history),
so a later change never moves an earlier row's features."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import ibis
import numpy as np
import pandas as pd
import pytest

from propensity import Project
from propensity.features.history import versions_at
from propensity.pipelines.cli import main
from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world

EARLY, LATE = "2025-03-01", "2025-03-20"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    data = tmp_path_factory.mktemp("world")
    paths = write_world(generate_world(WorldConfig(contacts=200, days=90, seed=8)), data, fmt="csv")
    contacts = pd.read_csv(paths["contacts"], dtype={"contact_id": str, "account_id": str})
    first = contacts.assign(updated_at="2025-02-01T00:00:00")
    moved = contacts["industry"] != "software"
    second = first.assign(industry=np.where(moved, "software", first["industry"]), updated_at="2025-03-10T00:00:00")
    third = second.drop(columns="updated_at").assign(country="ZZ")  # no updated_at: dated by its ingest (now)
    for name, frame in (("v1", first), ("v2", second), ("v3", third)):
        frame.to_csv(data / f"contacts_{name}.csv", index=False)
    return paths, data, sorted(contacts.loc[moved, "contact_id"])


def _features(ws, at, tmp_path, config=None, capsys=None):
    out = tmp_path / f"f_{at}_{random.random():.6f}.parquet"
    argv = ["-w", str(ws), "features", "--as-of", at, "--out", str(out)]
    assert main([*argv, *(["--config", str(config)] if config else [])]) == 0
    return pd.read_parquet(out).set_index("contact_id").sort_index()


def test_a_later_attribute_change_does_not_move_earlier_features(files, tmp_path, capsys):
    paths, data, moved = files
    ws = tmp_path / "ws"
    for kind, path in (("events", paths["events"]), ("contacts", data / "contacts_v1.csv")):
        assert main(["-w", str(ws), "ingest", kind, str(path)]) == 0
    early_before = _features(ws, EARLY, tmp_path)
    capsys.readouterr()
    assert main(["-w", str(ws), "ingest", "contacts", str(data / "contacts_v2.csv")]) == 0
    early_after = _features(ws, EARLY, tmp_path)
    said = " ".join(capsys.readouterr().out.split())
    assert "attribute values: as they were at each row's as_of, from the workspace's attribute history" in said
    pd.testing.assert_frame_equal(early_before, early_after)
    late = _features(ws, LATE, tmp_path)
    known = [c for c in moved if c in early_after.index]  # known at the early cut-off (created before it)
    assert len(known) > 50
    assert (late.loc[known, "industry"] == "software").all()
    assert (early_after.loc[known, "industry"] != "software").all()

    # a change ingested today without updated_at is dated today: no feature of 2025 moves
    assert main(["-w", str(ws), "ingest", "contacts", str(data / "contacts_v3.csv")]) == 0
    pd.testing.assert_frame_equal(_features(ws, LATE, tmp_path), late)
    assert Project(ws).ws.table("contacts")["country"].eq("ZZ").all()  # while the contacts hold the latest

    # `values: latest` reads the contacts as they are now at every as_of, and says so
    latest = tmp_path / "latest.yaml"
    latest.write_text("windows_days: [7, 30]\nhalf_lives_days: [7]\nattributes: {values: latest}\n")
    capsys.readouterr()
    now = _features(ws, EARLY, tmp_path, config=latest)
    assert "the contacts' latest (attributes.values: latest)" in " ".join(capsys.readouterr().out.split())
    assert (now.loc[known, "industry"] == "software").all() and now["country"].eq("ZZ").all()


def _reference(history: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Our own reading: per row the latest version with valid_from < as_of (NULL = always), ties to the
    later ingest; none valid: the earliest version."""
    out = []
    for row in rows.itertuples(index=False):
        mine = history[history["contact_id"] == row.contact_id]
        if mine.empty:
            continue
        dated = mine["valid_from"].fillna(pd.Timestamp("1900-01-01"))
        valid = mine[dated < row.as_of]
        if len(valid):
            pick = valid.assign(_d=dated[valid.index]).sort_values(["_d", "recorded_at"]).iloc[-1]
        else:
            pick = mine.assign(_d=dated).sort_values(["_d", "recorded_at"], ascending=[True, False]).iloc[0]
        out.append({"contact_id": row.contact_id, "as_of": row.as_of, "plan": pick["plan"]})
    return pd.DataFrame(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_versions_at_matches_a_naive_reference(seed):
    rng = random.Random(seed)
    start = datetime(2025, 1, 1)
    records = []
    for c in range(15):
        for v in range(rng.randint(1, 4)):
            valid = None if v == 0 and rng.random() < 0.5 else start + timedelta(days=rng.randint(0, 60))
            records.append({"contact_id": f"c{c}", "valid_from": valid,
                            "recorded_at": start + timedelta(days=100 + v, seconds=rng.randint(0, 9)),
                            "plan": rng.choice(["free", "pro", "team"]) + str(v)})
    history = pd.DataFrame(records).astype({"valid_from": "datetime64[us]", "recorded_at": "datetime64[us]"})
    cutoffs = [start + timedelta(days=d) for d in (0, 10, 30, 45, 61, 90)]
    rows = pd.DataFrame([(f"c{c}", t) for c in range(17) for t in cutoffs], columns=["contact_id", "as_of"])
    rows["as_of"] = rows["as_of"].astype("datetime64[us]")
    # valid_from exactly at a cut-off: not known at it (as an event at as_of is not)
    rows.loc[0, "as_of"] = history["valid_from"].dropna().iloc[0]
    con = ibis.duckdb.connect()
    got = versions_at(con.create_table("h", history), con.create_table("r", rows), ["plan"]).execute()
    got = got.drop(columns="_late").sort_values(["contact_id", "as_of"]).reset_index(drop=True)
    want = _reference(history, rows).sort_values(["contact_id", "as_of"]).reset_index(drop=True)
    got["as_of"] = got["as_of"].astype("datetime64[us]")
    pd.testing.assert_frame_equal(got[["contact_id", "as_of", "plan"]], want, check_dtype=False)
