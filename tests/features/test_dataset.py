"""Dataset mapping configs: loading, {root}, ingest and spines; the shipped OULAD configs."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pandas as pd
import pydantic
import pytest

from propensity.features.dataset import (
    DatasetConfig,
    dataset_spine,
    ingest_dataset,
    load_dataset_config,
    render_sql,
)
from propensity.features.store import Workspace
from propensity.features.validate import DataValidationError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "datasets"
OULAD = Path(__file__).resolve().parents[2].parent / "shared/data/oulad"
NOW = "2024-06-01"

TINY_YAML = """\
name: tiny
root: raw
events: |
  SELECT 'e' || id AS event_id, who AS contact_id, what AS event_type, happened AS ts
  FROM read_parquet('{root}/clicks.parquet')
contacts: |
  SELECT who AS contact_id, plan FROM read_parquet('{root}/people.parquet')
outcomes: |
  SELECT who AS contact_id, TIMESTAMP '2024-05-20' AS ts, 'won' AS outcome
  FROM read_parquet('{root}/people.parquet') WHERE plan = 'pro'
spines:
  may: |
    SELECT who AS contact_id, DATE '2024-05-15' AS as_of FROM read_parquet('{root}/people.parquet')
  broken: |
    SELECT who AS contact FROM read_parquet('{root}/people.parquet')
"""


@pytest.fixture
def tiny(tmp_path) -> DatasetConfig:
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    pd.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "who": ["a", "a", "b", ""],
            "what": ["visit", "demo", "visit", "visit"],
            "happened": pd.to_datetime(["2024-05-01", "2024-05-02", "2024-05-03", "2024-05-04"]),
        }
    ).to_parquet(raw / "clicks.parquet")
    pd.DataFrame({"who": ["a", "b"], "plan": ["pro", "free"]}).to_parquet(raw / "people.parquet")
    path = tmp_path / "data" / "tiny.yaml"
    path.write_text(TINY_YAML, encoding="utf-8")
    return load_dataset_config(path)


# --------------------------------------------------------------------------- config


def test_relative_root_resolves_against_the_yaml_folder(tiny, tmp_path):
    assert tiny.root == (tmp_path / "data" / "raw").resolve()


def test_unknown_keys_are_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nevnets: SELECT 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.yaml: invalid dataset config: evnets"):
        load_dataset_config(path)


def test_config_is_frozen(tiny):
    with pytest.raises(pydantic.ValidationError):
        tiny.name = "other"


def test_render_sql_quotes_the_root_and_leaves_other_braces():
    sql = "SELECT {'a': 1} AS s FROM read_parquet('{root}/x.parquet')"
    rendered = render_sql(sql, "/data/o'brien")
    assert rendered == "SELECT {'a': 1} AS s FROM read_parquet('/data/o''brien/x.parquet')"


def test_render_sql_without_a_root_is_a_clear_error():
    with pytest.raises(ValueError, match="--root"):
        render_sql("SELECT * FROM '{root}/x.csv'", None)


@pytest.mark.parametrize("name", ["oulad.yaml", "oulad_leaky.yaml"])
def test_shipped_configs_load(name):
    config = load_dataset_config(CONFIGS / name)
    assert config.events and config.contacts and config.outcomes
    assert "day60" in config.spines
    assert config.root == OULAD.resolve()


def sql_without_comments(sql: str) -> str:
    return "\n".join(line.split("--")[0] for line in sql.splitlines())


def test_oulad_config_maps_no_leaky_column():
    config = load_dataset_config(CONFIGS / "oulad.yaml")
    for kind in ("events", "contacts"):
        sql = sql_without_comments(config.query(kind))
        assert "date_unregistration" not in sql, kind
        assert "final_result" not in sql, kind
    assert "final_result" in config.outcomes


def test_leaky_config_is_labelled_and_maps_unregistration():
    text = (CONFIGS / "oulad_leaky.yaml").read_text(encoding="utf-8")
    assert text.startswith("# !!! DELIBERATELY LEAKY CONFIG")
    contacts = sql_without_comments(load_dataset_config(CONFIGS / "oulad_leaky.yaml").contacts)
    assert "date_unregistration AS BIGINT) AS days_to_unregistration" in contacts


# --------------------------------------------------------------------------- ingest and spines


def test_ingest_dataset_loads_validates_and_dedupes(tiny, tmp_path):
    ws = Workspace(tmp_path / "ws")
    reports = ingest_dataset(ws, tiny, now=NOW)
    assert list(reports) == ["events", "contacts", "outcomes"]
    assert (reports["events"].loaded, reports["events"].rejected) == (3, 1)
    assert reports["contacts"].loaded == 2
    assert reports["outcomes"].loaded == 1
    reason = ws.table("rejects")["reason"].iloc[0]
    assert reason.startswith("tiny.yaml:events row ") and "field 'contact_id': is empty" in reason
    before = ws.counts()
    again = ingest_dataset(ws, tiny, now=NOW)
    assert all(r.loaded == 0 for r in again.values())
    assert ws.counts() == before


def test_root_argument_overrides_the_config(tiny, tmp_path):
    moved = tmp_path / "elsewhere"
    (tmp_path / "data" / "raw").rename(moved)
    with pytest.raises(FileNotFoundError, match="--root"):
        ingest_dataset(tmp_path / "ws", tiny)
    assert ingest_dataset(tmp_path / "ws", tiny, root=moved, now=NOW)["contacts"].loaded == 2


def test_spine_has_contact_id_and_as_of(tiny, tmp_path):
    spine = dataset_spine(Workspace(tmp_path / "ws"), tiny, "may")
    assert spine["contact_id"].tolist() == ["a", "b"]
    assert spine["as_of"].dtype == "datetime64[us]"
    assert (spine["as_of"] == pd.Timestamp("2024-05-15")).all()
    with duckdb.connect() as con:
        assert dataset_spine(con, tiny, "may").equals(spine)


def test_spine_errors_name_the_spine(tiny, tmp_path):
    with pytest.raises(KeyError, match="no spine 'nope'"):
        dataset_spine(Workspace(tmp_path / "ws"), tiny, "nope")
    missing = r"spine 'broken': missing column\(s\) 'contact_id', 'as_of'"
    with pytest.raises(DataValidationError, match=missing):
        dataset_spine(Workspace(tmp_path / "ws"), tiny, "broken")


# --------------------------------------------------------------------------- OULAD (real data)

needs_oulad = pytest.mark.skipif(
    not OULAD.is_dir(), reason=f"OULAD data not found at {OULAD} (ships beside the repo)"
)

CLICKS = 10_655_280
SUBMISSIONS = 173_912
BANKED = 1_909  # is_banked: results carried over from an earlier presentation
REGISTRATIONS = 32_548  # 45 enrolments have no registration date
# Of the 304,597 enrolment x dated-assessment pairs of the same presentation, those with no
# submission on or before the deadline (never submitted, or late); LATE of them were submitted
# after it. Measured by joining studentInfo, assessments (date NOT NULL) and studentAssessment.
MISSED = 182_868
LATE = 49_318
CONTACTS = 32_593
PASSED = 12_361 + 3_024  # Pass + Distinction


def presentation_start(account_id: str) -> pd.Timestamp:
    """Feb 1 ('B') or Oct 1 ('J') of the presentation's year, as in oulad.yaml."""
    code = account_id.split("-")[1]
    return pd.Timestamp(int(code[:4]), 2 if code.endswith("B") else 10, 1)


@pytest.fixture(scope="module")
def oulad(tmp_path_factory):
    """The OULAD workspace, ingested once for the module (about a minute on 2 cores)."""
    if not OULAD.is_dir():
        pytest.skip(f"OULAD data not found at {OULAD}")
    ws = Workspace(tmp_path_factory.mktemp("oulad") / "ws")
    config = load_dataset_config(CONFIGS / "oulad.yaml")
    start = time.perf_counter()
    reports = ingest_dataset(ws, config, root=OULAD)
    seconds = time.perf_counter() - start
    print(f"\nOULAD ingest: {seconds:.1f} s; " + "; ".join(str(r) for r in reports.values()))
    return ws, config, reports


@needs_oulad
@pytest.mark.oulad
def test_oulad_leaky_contacts_carry_the_unregistration_day():
    config = load_dataset_config(CONFIGS / "oulad_leaky.yaml")
    sql = render_sql(config.contacts, OULAD)
    with duckdb.connect() as con:
        query = f"SELECT count(*), count(days_to_unregistration) FROM ({sql})"
        rows, leaky = con.execute(query).fetchall()[0]
    assert (rows, leaky) == (CONTACTS, 10_072)


@needs_oulad
@pytest.mark.oulad
@pytest.mark.slow
def test_oulad_row_counts(oulad):
    ws, _, reports = oulad
    assert ws.counts() == {
        # each submission not banked: submitted, marked and marked against its cohort
        "events": CLICKS + 3 * (SUBMISSIONS - BANKED) + BANKED + REGISTRATIONS + MISSED,
        "contacts": CONTACTS,
        "outcomes": PASSED,
        "rejects": 0,
    }
    assert all(r.rejected == 0 and r.duplicates == 0 for r in reports.values())
    assert round(PASSED / CONTACTS, 3) == 0.472
    with ws.connect() as con:
        by_type = dict(
            con.execute(
                "SELECT CASE WHEN event_type LIKE 'assessment%' OR event_type = 'registered' "
                "THEN event_type ELSE 'click' END, count(*) FROM events GROUP BY 1"
            ).fetchall()
        )
        types = con.execute("SELECT count(DISTINCT event_type) FROM events").fetchall()[0][0]
        # a missed deadline is stamped AT the deadline: never after a submission made before it
        paired, early = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE s.ts <= m.ts) FROM events m "
            "JOIN events s ON s.event_type = 'assessment_submitted' "
            "AND m.event_type = 'assessment_missed' "
            "AND s.event_id = replace(m.event_id, 'miss-', 'asm-')"
        ).fetchall()[0]
    assert by_type == {
        "click": CLICKS, "assessment_submitted": SUBMISSIONS - BANKED, "assessment_marked": SUBMISSIONS - BANKED,
        "assessment_mark_vs_cohort": SUBMISSIONS - BANKED, "assessment_banked": BANKED,
        "registered": REGISTRATIONS, "assessment_missed": MISSED,
    }  # fmt: skip
    assert types == 20 + 6  # 20 VLE activity types + submitted, marked, vs cohort, banked, registered, missed
    assert (paired, early) == (LATE, 0)  # the late ones pair up, none was submitted in time


@needs_oulad
@pytest.mark.oulad
@pytest.mark.slow
def test_oulad_marks_are_stamped_when_known_never_at_a_tma_submission(oulad):
    # The assumption of oulad.yaml: a CMA is marked on submission, a TMA or exam 14 days after
    # the later of its deadline and its submission; never before the submission itself.
    ws, _, _ = oulad
    with ws.connect() as con:
        rows = con.execute(
            "SELECT json_extract_string(m.properties, '$.assessment_type') AS kind, "
            "date_diff('day', s.ts, m.ts) AS after_submission, s.value AS days_early, "
            "date_diff('day', s.ts, r.ts) AS relative_after_submission "
            "FROM events m JOIN events s ON s.event_id = replace(m.event_id, 'mark-', 'asm-') "
            "JOIN events r ON r.event_id = replace(m.event_id, 'mark-', 'markrel-') "
            "WHERE m.event_type = 'assessment_marked'"
        ).df()
    assert len(rows) == SUBMISSIONS - BANKED
    cma = rows["kind"] == "CMA"
    assert (rows.loc[cma, "after_submission"] == 0).all()
    tma = rows[~cma & (rows["kind"] == "TMA")]
    # 14 days after the deadline (days_early ahead of the submission) or after a late submission
    assert (tma["after_submission"] == 14 + tma["days_early"].clip(lower=0)).all()
    assert (rows["after_submission"] >= 0).all()
    assert (rows["relative_after_submission"] == rows["after_submission"]).all()


@needs_oulad
@pytest.mark.oulad
@pytest.mark.slow
def test_oulad_contacts_have_fit_attributes_and_no_leaky_ones(oulad):
    ws, _, _ = oulad
    contacts = ws.table("contacts")
    assert contacts["contact_id"].is_unique
    assert contacts["contact_id"].iloc[0].count("-") == 2
    assert {"gender", "region", "imd_band", "num_of_prev_attempts", "code_module", "semester"} <= set(contacts)
    assert set(contacts["semester"]) == {"B", "J"} and "code_presentation" not in contacts
    assert not {"final_result", "date_unregistration", "days_to_unregistration"} & set(contacts)
    assert contacts["num_of_prev_attempts"].dtype == "int64"
    assert contacts["created_at"].notna().all()


@needs_oulad
@pytest.mark.oulad
@pytest.mark.slow
def test_oulad_timestamps_are_sane_per_presentation(oulad):
    ws, _, _ = oulad
    with ws.connect() as con:
        spans = con.execute(
            "SELECT account_id, event_type LIKE 'assessment%' OR event_type = 'registered' AS other, "
            "min(ts) AS first, max(ts) AS last FROM events GROUP BY ALL"
        ).df()
        ends = con.execute(
            "SELECT o.contact_id, o.ts FROM outcomes o USING SAMPLE 500 ROWS"
        ).df()
    assert spans["account_id"].nunique() == 22
    for row in spans.itertuples():
        start = presentation_start(row.account_id)
        first, last = (row.first - start).days, (row.last - start).days
        if row.other:  # registrations from day -322, submissions (incl. banked) to day 608, marks 14 days later
            assert -365 <= first and last <= 700, row
        else:  # the README: studentVle date runs from -25 to 269
            assert -25 <= first and last <= 269, row
    for row in ends.itertuples():
        start = presentation_start(row.contact_id.rsplit("-", 1)[0])
        assert 234 <= (row.ts - start).days <= 269  # module_presentation_length


@needs_oulad
@pytest.mark.oulad
@pytest.mark.slow
def test_oulad_day60_spine(oulad):
    ws, config, _ = oulad
    spine = dataset_spine(ws, config, "day60", root=OULAD)
    assert len(spine) == 26_403
    assert spine["contact_id"].is_unique
    starts = spine["contact_id"].str.rsplit("-", n=1).str[0].map(presentation_start)
    assert ((spine["as_of"] - starts).dt.days == 60).all()
    contacts = set(ws.table("contacts")["contact_id"])
    assert set(spine["contact_id"]) <= contacts


@needs_oulad
@pytest.mark.oulad
@pytest.mark.slow
def test_oulad_reingest_adds_nothing(oulad):
    ws, config, _ = oulad
    before = ws.counts()
    reports = ingest_dataset(ws, config, root=OULAD)
    assert all(r.loaded == 0 for r in reports.values())
    assert ws.counts() == before
