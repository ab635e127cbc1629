"""Why a rule score changed: the split sums exactly, and each component gets what caused it."""

from datetime import datetime, timedelta

import ibis
import numpy as np
import pandas as pd
import pytest

from propensity.pipelines.explain.change import split_step
from propensity.pipelines.explain.change_jobs import (
    explain_change,
    explain_changed_bands,
)
from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.rules.score import score_contacts

SINCE, UNTIL = datetime(2025, 5, 1), datetime(2025, 6, 1)

RULES = RuleSet.model_validate({
    "name": "test",
    "activities": [
        {"name": "pricing", "event": "page_view", "where": {"path": "/pricing"}, "points": 5,
         "half_life_days": 7, "expires_after_days": 30, "cap": 12},
        {"name": "pages", "event": "page_view", "where": {"path": ["/", "/blog"]}, "points": 1},
        {"name": "trial", "event": "trial_started", "points": 50, "weight": 1.5, "expires_after_days": 40},
        {"name": "feature", "event": "feature_used", "points": 10, "weight": 1.2, "half_life_days": 14, "cap": 40},
        {"name": "purchase", "event": "purchase", "points": 0.1, "per_value": True, "expires_after_days": 10},
        {"name": "unsub", "event": "unsubscribed", "points": -20},
    ],
    "fit": [
        {"name": "mid_market", "attribute": "size", "min": 50, "max": 1000, "points": 15},
        {"name": "software", "attribute": "industry", "in": ["software", "fintech"], "points": 10},
    ],
    "scale": {0: 0, 25: 1, 50: 2, 75: 3, 150: 4, 300: 5},
    "bands": [{"name": "cold", "min_score": 0}, {"name": "warm", "min_score": 2}, {"name": "hot", "min_score": 3.5}],
})


def _events(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["contact_id", "event_type", "ts", "value", "properties"])
    return frame.assign(
        event_id=[f"e{i}" for i in range(len(frame))],
        ts=pd.to_datetime(frame["ts"]).astype("datetime64[us]"),
        value=frame["value"].astype("float64"),
        properties=frame["properties"].astype("string"),
        account_id=pd.Series([None] * len(frame), dtype="string"),
    )


def _random_events(seed: int, n: int = 800, contacts: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    types = ["page_view", "trial_started", "feature_used", "purchase", "unsubscribed", "other"]
    start = UNTIL - timedelta(days=90)
    rows = []
    for _ in range(n):
        kind = types[rng.integers(len(types))]
        props = f'{{"path": "{rng.choice(["/pricing", "/", "/blog"])}"}}' if kind == "page_view" else None
        ts = start + timedelta(seconds=float(rng.uniform(0, 100 * 86400)))  # some after UNTIL
        rows.append((f"c{rng.integers(contacts)}", kind, ts, round(float(rng.uniform(0, 400)), 2), props))
    return _events(rows)


def _contacts(n: int = 30, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "contact_id": [f"c{i}" for i in range(n)],
        "account_id": pd.Series([None] * n, dtype="string"),
        "created_at": pd.Series([pd.NaT] * n, dtype="datetime64[us]"),
        "size": rng.choice([10.0, 50.0, 999.0, 5000.0], size=n),
        "industry": rng.choice(["software", "retail", "fintech"], size=n),
    })


def _con(events: pd.DataFrame, contacts: pd.DataFrame):
    con = ibis.duckdb.connect()
    con.create_table("events", events)
    con.create_table("contacts", contacts)
    return con


def _score(con, ids, at, rules, contacts):
    spine = ibis.memtable(pd.DataFrame({"contact_id": ids, "as_of": [pd.Timestamp(at)] * len(ids)})
                          .astype({"as_of": "datetime64[us]"}))
    return score_contacts(con.table("events"), spine, rules, contacts=contacts).set_index("contact_id").loc[ids]


def _row(report, contact_id):
    i = list(report.rule.contact_ids).index(contact_id)
    return report.rule.components().iloc[i], {k: v.iloc[i] for k, v in report.rule.steps.items()}


@pytest.mark.parametrize("seed", [0, 1])
def test_rule_split_sums_to_the_change_and_its_ends_are_the_scores_at_both_dates(seed):
    events, contacts = _random_events(seed), _contacts()
    before = contacts.assign(size=np.roll(contacts["size"].to_numpy(), 1))  # attributes changed too
    changed = RULES.model_copy(update={"name": "test_v2", "activities": tuple(
        a.model_copy(update={"points": a.points * 2}) if a.name == "feature" else a for a in RULES.activities)})
    con = _con(events, contacts)
    ids = sorted(contacts["contact_id"])
    report = explain_change(con, ids, SINCE, UNTIL, rules=changed, rules_before=RULES, contacts_before=before)
    split = report.rule
    assert split.residual() < 1e-9
    np.testing.assert_allclose(split.components().sum(axis=1), split.change, rtol=0, atol=1e-9)
    np.testing.assert_allclose(split.before, _score(con, ids, SINCE, RULES, before)["rule_score"], atol=1e-12)
    np.testing.assert_allclose(split.after, _score(con, ids, UNTIL, changed, contacts)["rule_score"], atol=1e-12)
    for name, frame in split.steps.items():  # every step sums exactly over its groups
        assert np.isfinite(frame.to_numpy()).all(), name
    moved = split.components().abs().gt(1e-9).sum()
    assert (moved > 0).all(), f"every component should move someone in this world: {moved.to_dict()}"
    assert split.definition == "test -> test_v2"


def test_only_new_events_land_in_new_events_per_event_type():
    events = _events([
        ("c1", "trial_started", SINCE + timedelta(days=3), 1, None),
        ("c1", "page_view", SINCE + timedelta(days=20), 1, '{"path": "/pricing"}'),
        ("c1", "page_view", SINCE + timedelta(days=21), 1, '{"path": "/"}'),
        ("c2", "other", SINCE + timedelta(days=2), 1, None),
    ])
    con = _con(events, _contacts(3))
    report = explain_change(con, ["c1", "c2"], SINCE, UNTIL, rules=RULES)
    components, steps = _row(report, "c1")
    assert components["decay_expiry"] == 0 and components["fit"] == 0 and components["rules"] == 0
    assert components["new_events"] == pytest.approx(report.rule.change[0], abs=1e-12) and components["new_events"] > 0
    new = steps["new_events"]
    assert new["trial_started"] > 0 and new["page_view"] > 0
    assert (new.drop(["trial_started", "page_view"]) == 0).all()
    # an event type no rule reads moves nothing
    assert report.rule.change[1] == 0 and all(abs(v) == 0 for v in report.rule.components().iloc[1])
    assert report.rule.top_reason(0)["reason"] == "new trial_started events"


def test_only_time_passing_lands_in_decay_expiry_with_expired_events_on_their_type():
    events = _events([
        ("c1", "feature_used", SINCE - timedelta(days=2), 1, None),  # decays (half-life 14)
        ("c1", "trial_started", SINCE - timedelta(days=20), 1, None),  # expires (40 days) before UNTIL
        ("c1", "unsubscribed", SINCE - timedelta(days=5), 1, None),  # neither: moves nothing
    ])
    con = _con(events, _contacts(3))
    report = explain_change(con, ["c1"], SINCE, UNTIL, rules=RULES)
    components, steps = _row(report, "c1")
    assert components["new_events"] == 0 and components["fit"] == 0 and components["rules"] == 0
    assert components["decay_expiry"] == pytest.approx(report.rule.change[0], abs=1e-12)
    assert components["decay_expiry"] < 0
    aging = steps["decay_expiry"]
    assert aging["trial_started"] < aging["feature_used"] < 0
    assert aging["unsubscribed"] == 0
    # the trial's 75 points were all lost: at both dates the expired event counts nothing more
    before, after = report.rule.before[0], report.rule.after[0]
    assert before > after


def test_only_attribute_changes_land_in_fit_on_the_attribute():
    contacts = _contacts(3).assign(size=[10.0, 10.0, 10.0], industry=["retail", "software", "retail"])
    before = contacts.assign(size=[500.0, 10.0, 10.0])  # c0 left the mid-market range
    con = _con(_events([("c9", "other", SINCE, 1, None)]), contacts)
    report = explain_change(con, ["c0", "c1"], SINCE, UNTIL, rules=RULES, contacts_before=before)
    components, steps = _row(report, "c0")
    assert components["fit"] == pytest.approx(report.rule.change[0], abs=1e-12)
    assert components["fit"] < 0
    assert components["decay_expiry"] == 0 and components["new_events"] == 0 and components["rules"] == 0
    assert steps["fit"]["size"] < 0 and steps["fit"]["industry"] == 0
    assert report.rule.change[1] == 0  # c1 kept its attributes
    assert not report.notes  # the earlier attributes were given: nothing assumed


def test_without_earlier_attributes_the_fit_part_is_zero_and_the_report_says_so():
    con = _con(_random_events(4), _contacts())
    report = explain_change(con, ["c1", "c2"], SINCE, UNTIL, rules=RULES)
    assert (report.rule.components()["fit"] == 0).all()
    assert any("attributes" in n and "--contacts-before" in n for n in report.notes)


def test_a_changed_rules_file_lands_in_the_rules_part():
    events, contacts = _random_events(5), _contacts()
    doubled = RULES.model_copy(update={"name": "doubled", "activities": tuple(
        a.model_copy(update={"points": a.points * 2}) for a in RULES.activities)})
    con = _con(events, contacts)
    ids = sorted(contacts["contact_id"])
    same = explain_change(con, ids, SINCE, UNTIL, rules=RULES)
    changed = explain_change(con, ids, SINCE, UNTIL, rules=doubled, rules_before=RULES)
    assert (same.rule.components()["rules"] == 0).all()
    for step in ("decay_expiry", "new_events", "fit"):  # measured with the earlier rules: unchanged
        np.testing.assert_array_equal(changed.rule.components()[step], same.rule.components()[step])
    expected = (_score(con, ids, UNTIL, doubled, contacts)["rule_score"].to_numpy()
                - _score(con, ids, UNTIL, RULES, contacts)["rule_score"].to_numpy())
    np.testing.assert_allclose(changed.rule.components()["rules"], expected, atol=1e-12)
    assert np.abs(expected).max() > 0.1
    assert "rules changed (test -> doubled)" in set(changed.rule.parts()["reason"])


def test_events_after_the_later_date_move_nothing():
    events, contacts = _random_events(6), _contacts()
    ids = sorted(contacts["contact_id"])
    late = _events([(c, t, UNTIL + timedelta(hours=h), 50, '{"path": "/pricing"}')
                    for c in ids for t, h in (("trial_started", 0), ("page_view", 1), ("feature_used", 30))])
    base = explain_change(_con(events, contacts), ids, SINCE, UNTIL, rules=RULES)
    both = pd.concat([events, late.assign(event_id=[f"late{i}" for i in range(len(late))])], ignore_index=True)
    with_future = explain_change(_con(both, contacts), ids, SINCE, UNTIL, rules=RULES)
    pd.testing.assert_frame_equal(base.rule.summary(), with_future.rule.summary())


def test_the_batch_form_explains_the_contacts_whose_band_changed():
    events, contacts = _random_events(7, n=1500), _contacts()
    con = _con(events, contacts)
    report = explain_changed_bands(con, SINCE, UNTIL, rules=RULES)
    everyone = sorted(contacts["contact_id"])
    bands0 = _score(con, everyone, SINCE, RULES, contacts)["band"].astype(str)
    bands1 = _score(con, everyone, UNTIL, RULES, contacts)["band"].astype(str)
    expected = sorted(bands0.index[bands0.to_numpy() != bands1.to_numpy()])
    assert expected, "the world should move some bands"
    assert list(report.rule.contact_ids) == expected
    summary = report.summary()
    assert (summary["band_before"] != summary["band_after"]).all()
    np.testing.assert_allclose(summary[["decay_expiry", "new_events", "fit", "rules", "model"]].sum(axis=1),
                               summary["change"], atol=1e-9)
    assert summary["change_reason_1"].notna().all()


def test_split_step_shares_a_step_by_the_secant_and_keeps_zero_for_cancelling_groups():
    parts = split_step(np.array([[10.0, 30.0], [5.0, -5.0], [0.0, 0.0]]), np.array([2.0, 0.0, 0.0]))
    np.testing.assert_allclose(parts, [[0.5, 1.5], [0.0, 0.0], [0.0, 0.0]])
    assert parts.sum(axis=1).tolist() == [2.0, 0.0, 0.0]


def test_the_cli_explains_one_change_as_json_and_every_changed_band_as_csv(tmp_path):
    import json

    from propensity.pipelines.cli import main

    events, contacts = _random_events(8, n=1500), _contacts()
    events.to_parquet(tmp_path / "events.parquet")
    contacts.to_parquet(tmp_path / "contacts.parquet")
    rules = tmp_path / "rules.yaml"
    from propensity.pipelines.rules.config import dump_rules

    rules.write_text(dump_rules(RULES))
    ws = str(tmp_path / "ws")
    for kind in ("contacts", "events"):
        assert main(["-w", ws, "ingest", kind, str(tmp_path / f"{kind}.parquet")]) == 0
    out, detail = tmp_path / "changes.csv", tmp_path / "parts.jsonl"
    assert main(["-w", ws, "explain", "--since", "2025-05-01", "--as-of", "2025-06-01", "--changed-band",
                 "--rules", str(rules), "--out", str(out), "--detail", str(detail)]) == 0
    summary = pd.read_csv(out, dtype={"contact_id": str})
    parts = pd.read_json(detail, lines=True, dtype={"contact_id": str})
    assert len(summary) and (summary["band_before"] != summary["band_after"]).all()
    by_contact = parts.groupby("contact_id")["points"].sum()
    np.testing.assert_allclose(by_contact.loc[summary["contact_id"]].to_numpy(), summary["change"], atol=1e-9)
    contact = summary["contact_id"].iloc[0]
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["-w", ws, "explain", contact, "--since", "2025-05-01", "--as-of", "2025-06-01",
                     "--rules", str(rules), "--json"]) == 0
    payload = json.loads(buffer.getvalue())
    rule = payload["rule_score"]
    assert rule["change"] == pytest.approx(summary["change"].iloc[0], abs=1e-9)
    assert sum(rule["components"].values()) == pytest.approx(rule["change"], abs=1e-9)
    assert "learned_score" not in payload and any("learned score" in n for n in payload["notes"])


def test_a_since_after_the_later_date_or_a_batch_without_since_fails_clearly(tmp_path, capfd):
    from propensity.pipelines.cli import main

    events, contacts = _random_events(9, n=50), _contacts()
    events.to_parquet(tmp_path / "events.parquet")
    ws = str(tmp_path / "ws")
    assert main(["-w", ws, "ingest", "events", str(tmp_path / "events.parquet")]) == 0
    with pytest.raises(ValueError, match="must be before"):
        explain_change(_con(events, contacts), ["c1"], UNTIL, SINCE, rules=RULES)
    assert main(["-w", ws, "explain", "c1", "--since", "2025-07-01", "--as-of", "2025-06-01"]) == 2
    assert "must be before the later date" in capfd.readouterr().err
    assert main(["-w", ws, "explain", "--changed-band"]) == 2
    assert "--since" in capfd.readouterr().err
    assert main(["-w", ws, "explain", "c1", "--since", "2025-05-01", "--changed-band"]) == 2
    # a model named on the command line must exist (only the champion is optional)
    assert main(["-w", ws, "explain", "c1", "--since", "2025-05-01", "--as-of", "2025-06-01", "--model", "7"]) == 2
    assert "7" in capfd.readouterr().err


def test_group_shapley_matches_the_definition_and_sums_exactly_when_sampled():
    import itertools
    import math

    from propensity.pipelines.explain.coalitions import EXACT_UP_TO, group_shapley

    rng = np.random.default_rng(11)

    def f(m):  # non-additive, with interactions between columns of different groups
        return np.tanh(m[:, 0] * m[:, 3]) + m[:, 1] ** 2 - np.maximum(m[:, 2], m[:, 4]) + 0.3 * m[:, 5] * m[:, 0]

    groups = np.array([0, 0, 1, 2, 3, 4])
    before = rng.normal(size=(4, 6))
    after = before.copy()
    after[:, [0, 2, 3, 5]] += rng.normal(size=(4, 4))  # group 3 (column 4) and column 1 do not change
    parts = group_shapley(f, before, after, groups, 5)
    for r in range(4):
        players = [0, 1, 2, 4]
        expected = np.zeros(5)

        def value(coalition, row=r):
            hybrid = before[row].copy()
            for g in coalition:
                hybrid[groups == g] = after[row, groups == g]
            return f(hybrid[None, :])[0]

        k = len(players)
        for g in players:
            others = [p for p in players if p != g]
            for size in range(k):
                for s in itertools.combinations(others, size):
                    weight = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
                    expected[g] += weight * (value((*s, g)) - value(s))
        np.testing.assert_allclose(parts[r], expected, atol=1e-12)
        assert parts[r, 3] == 0  # unchanged group: not a player
    # many changed groups: sampled orders, still an exact sum
    n = EXACT_UP_TO + 3
    wide_before, wide_after = rng.normal(size=(2, n)), rng.normal(size=(2, n))

    def g(m):
        return np.sin(m).sum(axis=1) + m[:, 0] * m[:, 1] * m[:, 2]

    sampled = group_shapley(g, wide_before, wide_after, np.arange(n), n)
    np.testing.assert_allclose(sampled.sum(axis=1), g(wide_after) - g(wide_before), atol=1e-12)
