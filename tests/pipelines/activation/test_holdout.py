"""The holdout: a stable hash share, firings recorded but not delivered, held-out contacts not pushed."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest
import sqlalchemy as sa
from propensity.pipelines.activation.holdout import (
    HoldoutConfig,
    assign,
    hash_unit,
    held_out_by_hash,
)
from propensity.pipelines.activation.outbox import WebhookSender, deliver_due
from propensity.pipelines.activation.push import (
    PushOptions,
    destination_from_env,
    push,
    traits_from_scores,
)
from propensity.pipelines.activation.tables import (
    holdout_assignments,
    holdout_exposures,
    outbox,
    push_state,
    trigger_firings,
)
from propensity.pipelines.activation.triggers import (
    ScoreChange,
    TriggerEngine,
    TriggersConfig,
    TriggersConfigError,
    load_triggers,
)

NOW = dt.datetime(2026, 3, 1, 12, 0)
SECRET = "whsec-holdout-77"
FAST = PushOptions(batch_size=50, rate=1000, max_attempts=2, initial_backoff_seconds=0.01, max_backoff_seconds=0.02)


def crossing(contact: str, at: dt.datetime = NOW, band: str = "hot") -> ScoreChange:
    return ScoreChange(contact_id=contact, at=at, before_score=1.0, after_score=4.0, before_band="cold",
                       after_band=band, points_before=10.0, points_after=200.0)


def engine_with_holdout(share: float, experiment: str = "exp1", **extra) -> TriggerEngine:
    return TriggerEngine(TriggersConfig.model_validate({
        "bands": ["cold", "warm", "hot"],
        "triggers": [{"name": "became_hot", "kind": "band_entered", "band": "hot"},
                     {"name": "became_pql", "kind": "threshold_crossed", "measure": "points", "threshold": 75}],
        "holdout": {"experiment": experiment, "share": share, **extra}}))


def test_the_hash_assignment_is_stable_and_holds_out_the_configured_share():
    ids = [f"contact-{i}" for i in range(20_000)]
    first = [held_out_by_hash("exp1", c, 0.2) for c in ids]
    assert first == [held_out_by_hash("exp1", c, 0.2) for c in ids]  # same answer every time
    share = sum(first) / len(ids)
    # binomial sd at n=20,000, p=0.2 is 0.0028: 4 sd either side
    assert abs(share - 0.2) < 0.012
    # another experiment name draws a different holdout, of the same size
    other = [held_out_by_hash("exp2", c, 0.2) for c in ids]
    assert abs(sum(other) / len(ids) - 0.2) < 0.012
    overlap = sum(a and b for a, b in zip(first, other)) / len(ids)
    assert abs(overlap - 0.04) < 0.008  # independent draws: 0.2 * 0.2
    # a larger share keeps every contact of the smaller one (nested by the same hash)
    assert all(held_out_by_hash("exp1", c, 0.3) for c, held in zip(ids, first) if held)
    assert 0 <= min(hash_unit("exp1", c) for c in ids[:100]) and max(hash_unit("exp1", c) for c in ids[:100]) < 1


def test_a_recorded_assignment_survives_a_change_of_share(engine):
    ids = [f"c{i}" for i in range(400)]
    small = HoldoutConfig(experiment="exp1", share=0.5)
    with engine.begin() as conn:
        before = assign(conn, small, ids, NOW)
    assert before == {c: held_out_by_hash("exp1", c, 0.5) for c in ids}
    smaller = HoldoutConfig(experiment="exp1", share=0.05)
    with engine.begin() as conn:
        after = assign(conn, smaller, ids + ["new-1", "new-2"], NOW + dt.timedelta(days=1))
    assert {c: after[c] for c in ids} == before  # recorded groups stand
    assert after["new-1"] == held_out_by_hash("exp1", "new-1", 0.05)
    with engine.connect() as conn:
        shares = dict(conn.execute(sa.select(holdout_assignments.c.contact_id, holdout_assignments.c.share)).all())
    assert shares["c0"] == 0.5 and shares["new-1"] == 0.05 and len(shares) == 402


def test_held_out_firings_are_recorded_but_only_treated_ones_are_delivered(engine, receiver):
    te = engine_with_holdout(0.3, triggers=["became_hot"])
    contacts = [f"u{i}" for i in range(60)]
    held = {c for c in contacts if held_out_by_hash("exp1", c, 0.3)}
    assert 5 < len(held) < 55  # both arms present
    fired = []
    with engine.begin() as conn:
        for c in contacts:
            fired += te.evaluate(conn, crossing(c))
    hot = [f for f in fired if f.trigger == "became_hot"]
    assert {f.contact_id for f in hot if f.held_out} == held
    assert all(f.outbox_id is None for f in hot if f.held_out)
    # the holdout names only became_hot: became_pql goes to everyone
    assert {f.contact_id for f in fired if f.trigger == "became_pql"} == set(contacts)
    assert not any(f.held_out for f in fired if f.trigger == "became_pql")
    with WebhookSender(receiver.url + "/hook", SECRET) as sender:
        report = deliver_due(engine, sender, now=NOW + dt.timedelta(minutes=1), limit=1000)
    delivered = [(r.json()["trigger"], r.json()["contact_id"]) for r in receiver.received]
    assert report.delivered == len(delivered) == 2 * len(contacts) - len(held)
    assert {c for t, c in delivered if t == "became_hot"} == set(contacts) - held
    with engine.connect() as conn:
        firings = conn.execute(sa.select(trigger_firings.c.contact_id).where(
            trigger_firings.c.trigger == "became_hot")).scalars().all()
        exposures = pd.read_sql(sa.select(holdout_exposures), conn)
        queued = conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar()
    assert set(firings) == set(contacts)  # held-out firings are recorded
    assert queued == len(delivered)
    assert set(exposures["source"]) == {"became_hot"}
    assert set(exposures.loc[exposures["held_out"].astype(bool), "contact_id"]) == held
    assert set(exposures["band"]) == {"hot"}
    # the same crossing again is deduplicated for both arms
    with engine.begin() as conn:
        again = [f for c in contacts for f in te.evaluate(conn, crossing(c))]
    assert again == []


def test_the_holdout_config_is_validated_with_the_file_named(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("bands: [cold, hot]\ntriggers:\n  - {name: x, kind: band_entered, band: hot}\n"
                    "holdout: {experiment: e1, share: 0.1, triggers: [y]}\n")
    with pytest.raises(TriggersConfigError, match=r"t\.yaml.*holdout.triggers names no trigger.*'y'"):
        load_triggers(path)
    path.write_text("holdout: {experiment: e1, share: 1.5}\n")
    with pytest.raises(TriggersConfigError, match=r"t\.yaml.*share"):
        load_triggers(path)
    path.write_text("holdout: {experiment: e1, share: 0.1, shares: 2}\n")
    with pytest.raises(TriggersConfigError, match=r"t\.yaml.*shares"):
        load_triggers(path)


def test_held_out_contacts_are_not_pushed_and_their_exposure_is_recorded(engine, receiver):
    n = 80
    scores = pd.DataFrame({"contact_id": [f"c{i}" for i in range(n)], "as_of": pd.Timestamp("2026-03-01"),
                           "rule_score": [i / 20 for i in range(n)],
                           "band": ["cold" if i < 40 else "hot" for i in range(n)]})
    contacts = traits_from_scores(scores)
    holdout = HoldoutConfig(experiment="push-exp", share=0.25)
    held = {c.contact_id for c in contacts if held_out_by_hash("push-exp", c.contact_id, 0.25)}
    assert 5 < len(held) < n - 5
    destination = destination_from_env("segment", {"SEGMENT_WRITE_KEY": "wk", "SEGMENT_URL": receiver.url})
    dry = push(engine, destination, contacts, options=FAST, dry_run=True, holdout=holdout)
    assert dry.held_out == len(held) and receiver.received == []
    with engine.connect() as conn:  # a dry run records nothing
        assert conn.execute(sa.select(sa.func.count()).select_from(holdout_assignments)).scalar() == 0
    report = push(engine, destination, contacts, options=FAST, holdout=holdout)
    sent = {call["userId"] for r in receiver.received for call in r.json()["batch"]}
    assert sent == {c.contact_id for c in contacts} - held
    assert (report.sent, report.held_out) == (n - len(held), len(held))
    with engine.connect() as conn:
        acknowledged = set(conn.execute(sa.select(push_state.c.contact_id)).scalars())
        exposures = pd.read_sql(sa.select(holdout_exposures), conn)
    assert acknowledged == sent
    assert set(exposures["source"]) == {"push:segment"} and len(exposures) == n
    assert set(exposures.loc[exposures["held_out"].astype(bool), "contact_id"]) == held
    assert dict(zip(exposures["contact_id"], exposures["band"]))["c79"] == "hot"
    # a second run sends nothing and still holds the same contacts out
    again = push(engine, destination, contacts, options=FAST, holdout=holdout)
    assert (again.sent, again.held_out, again.unchanged) == (0, len(held), n - len(held))
    assert json.loads(receiver.received[0].body)["batch"][0]["type"] == "identify"
