"""Triggers: crossings, drops found by the sweep, cooldown, dedup, and the caller's transaction."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from propensity.pipelines.activation.tables import outbox, score_history, trigger_firings
from propensity.pipelines.activation.triggers import (
    ScoreChange,
    TriggerEngine,
    TriggersConfig,
    TriggersConfigError,
    load_triggers,
)
from propensity.pipelines.rules import load_rules

REPO = Path(__file__).resolve().parents[3]
T0 = dt.datetime(2026, 3, 1, 12, 0)


def change(contact="c1", at=T0, before=None, after=0.0, band_before=None, band_after="cold",
           points_before=None, points_after=0.0, events=()) -> ScoreChange:
    return ScoreChange(contact_id=contact, at=at, before_score=before, after_score=after, before_band=band_before,
                       after_band=band_after, points_before=points_before, points_after=points_after,
                       events=list(events))


def config(*triggers: dict) -> TriggersConfig:
    return TriggersConfig.model_validate({"bands": ["cold", "warm", "hot"], "triggers": list(triggers)})


def evaluate(engine, trigger_engine, c):
    with engine.begin() as conn:
        return trigger_engine.evaluate(conn, c)


def outbox_rows(engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(outbox).order_by(outbox.c.id)).all()


def test_shipped_triggers_config_loads_and_its_bands_match_the_shipped_rules():
    cfg = load_triggers(REPO / "configs" / "triggers.yaml")
    rules = load_rules(REPO / "configs" / "rules" / "saas.yaml")
    assert cfg.bands == tuple(b.name for b in rules.bands)
    assert {t.kind for t in cfg.triggers} == {"threshold_crossed", "band_entered", "score_dropped"}
    pql = next(t for t in cfg.triggers if t.name == "became_pql")
    assert pql.threshold == rules.thresholds["pql"]


def test_unknown_key_and_unknown_band_are_errors_naming_the_file(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("bands: [cold, hot]\ntriggers:\n"
                    "  - {name: x, kind: threshold_crossed, threshold: 3, thresold: 2}\n")
    with pytest.raises(TriggersConfigError, match=r"t\.yaml.*thresold"):
        load_triggers(path)
    path.write_text("bands: [cold, hot]\ntriggers:\n  - {name: x, kind: band_entered, band: warm}\n")
    with pytest.raises(TriggersConfigError, match=r"t\.yaml.*'warm' is not one of bands"):
        load_triggers(path)
    path.write_text("triggers:\n  - {name: x, kind: score_dropped, by: 0, within_days: 3}\n")
    with pytest.raises(TriggersConfigError, match=r"by"):
        load_triggers(path)


def test_threshold_crossed_upwards_fires_once_with_a_why_now_payload(engine):
    te = TriggerEngine(config({"name": "became_pql", "kind": "threshold_crossed", "measure": "points",
                               "threshold": 75}))
    assert evaluate(engine, te, change(after=1.0, points_after=40.0)) == []
    event = {"event_id": "e9", "event_type": "demo_requested", "ts": T0 + dt.timedelta(hours=1), "value": 1.0}
    crossing = change(at=T0 + dt.timedelta(hours=1), before=1.0, after=3.2, band_before="cold", band_after="warm",
                      points_before=40.0, points_after=190.0, events=[event])
    fired = evaluate(engine, te, crossing)
    assert [f.trigger for f in fired] == ["became_pql"]
    # the same change evaluated again (a redelivered event) and a later change above the line do not fire
    assert evaluate(engine, te, crossing) == []
    assert evaluate(engine, te, change(at=T0 + dt.timedelta(hours=2), before=3.2, after=3.4,
                                       points_before=190.0, points_after=200.0)) == []
    rows = outbox_rows(engine)
    assert len(rows) == 1 and rows[0].trigger == "became_pql" and rows[0].contact_id == "c1"
    payload = json.loads(rows[0].payload)
    assert payload["idempotency_key"] == rows[0].idempotency_key == fired[0].idempotency_key
    why = payload["why_now"]
    assert (why["score_before"], why["score_after"]) == (1.0, 3.2)
    assert (why["band_before"], why["band_after"]) == ("cold", "warm")
    assert (why["points_before"], why["points_after"], why["threshold"]) == (40.0, 190.0, 75.0)
    assert why["events"] == [{"event_id": "e9", "event_type": "demo_requested", "ts": "2026-03-01T13:00:00.000000Z",
                              "value": 1.0}]


def test_a_new_contact_already_above_the_threshold_fires(engine):
    te = TriggerEngine(config({"name": "pql", "kind": "threshold_crossed", "threshold": 2.0}))
    assert len(evaluate(engine, te, change(after=2.5, band_after="warm"))) == 1


def test_band_entered_fires_from_any_lower_band_and_never_downwards(engine):
    te = TriggerEngine(config({"name": "became_hot", "kind": "band_entered", "band": "hot"}))
    steps = [("c1", "warm", "hot", 1), ("c2", "cold", "hot", 1), ("c3", "hot", "hot", 0), ("c4", "hot", "warm", 0),
             ("c5", "cold", "warm", 0), ("c6", None, "hot", 1)]
    for contact, before, after, expected in steps:
        fired = evaluate(engine, te, change(contact=contact, before=1.0, after=4.0, band_before=before,
                                            band_after=after))
        assert len(fired) == expected, (contact, before, after)


def test_a_band_the_config_does_not_know_is_an_error_naming_contact_and_band(engine):
    te = TriggerEngine(config({"name": "became_hot", "kind": "band_entered", "band": "hot"}))
    with pytest.raises(ValueError, match=r"'c7'.*'scorching'"):
        evaluate(engine, te, change(contact="c7", before=1.0, after=5.0, band_before="warm", band_after="scorching"))


def test_cooldown_suppresses_a_second_crossing_until_it_has_passed(engine):
    te = TriggerEngine(config({"name": "pql", "kind": "threshold_crossed", "threshold": 3.0, "cooldown_hours": 24}))

    def up(hours):
        return evaluate(engine, te, change(at=T0 + dt.timedelta(hours=hours), before=2.0, after=3.5))

    assert len(up(0)) == 1
    assert up(10) == []  # crossed again (after decaying below) within 24 h
    assert len(up(25)) == 1
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(trigger_firings)).scalar() == 2


def test_a_drop_from_decay_alone_is_found_by_the_sweep_once_per_peak(engine):
    te = TriggerEngine(config({"name": "dropped", "kind": "score_dropped", "by": 1.5, "within_days": 14}))
    assert evaluate(engine, te, change(after=4.0, band_after="hot")) == []

    def sweep(days, before, after):
        with engine.begin() as conn:
            return te.sweep(conn, [change(at=T0 + dt.timedelta(days=days), before=before, after=after,
                                          band_before="hot", band_after="warm")])

    assert sweep(3, 4.0, 3.0) == []  # down 1.0 only
    fired = sweep(5, 3.0, 2.4)
    assert len(fired) == 1
    why = fired[0].payload["why_now"]
    assert why["peak"] == {"score": 4.0, "at": "2026-03-01T12:00:00.000000Z"}
    assert why["dropped_by"] == pytest.approx(1.6)
    assert sweep(6, 2.4, 2.0) == []  # still down from the same peak: not fired again
    assert sweep(20, 2.0, 1.0) == []  # the peak is older than 14 days now
    # a new peak from an event, then a drop from it: a new crossing
    assert evaluate(engine, te, change(at=T0 + dt.timedelta(days=21), before=1.0, after=3.8)) == []
    assert len(sweep(24, 3.8, 2.0)) == 1


def test_an_event_that_drops_the_score_fires_the_drop_trigger(engine):
    te = TriggerEngine(config({"name": "dropped", "kind": "score_dropped", "by": 1.0, "within_days": 7}))
    evaluate(engine, te, change(after=3.0))
    unsubscribe = {"event_id": "u1", "event_type": "unsubscribed", "ts": T0 + dt.timedelta(days=1), "value": 1.0}
    fired = evaluate(engine, te, change(at=T0 + dt.timedelta(days=1), before=2.9, after=1.5, events=[unsubscribe]))
    assert len(fired) == 1 and fired[0].payload["why_now"]["events"][0]["event_type"] == "unsubscribed"


def test_history_keeps_only_points_that_can_still_be_a_peak(engine):
    te = TriggerEngine(config({"name": "dropped", "kind": "score_dropped", "by": 1.0, "within_days": 7}))
    for i in range(20):  # rising scores: each new point makes the older ones irrelevant
        evaluate(engine, te, change(at=T0 + dt.timedelta(hours=i), before=i * 0.1, after=(i + 1) * 0.1))
    with engine.connect() as conn:
        rows = conn.execute(sa.select(score_history.c.score)).scalars().all()
    assert rows == [pytest.approx(2.0)]


def test_a_firing_is_written_in_the_callers_transaction_and_rolled_back_with_it(engine):
    te = TriggerEngine(config({"name": "pql", "kind": "threshold_crossed", "threshold": 3.0}))
    crossing = change(before=2.0, after=3.5)
    with pytest.raises(RuntimeError, match="event store failed"):
        with engine.begin() as conn:
            assert len(te.evaluate(conn, crossing)) == 1
            raise RuntimeError("event store failed")
    assert outbox_rows(engine) == []
    # the event is retried and committed this time: now the firing is there, once
    assert len(evaluate(engine, te, crossing)) == 1
    assert len(outbox_rows(engine)) == 1


def test_timezone_aware_instants_are_stored_as_naive_utc(engine):
    te = TriggerEngine(config({"name": "pql", "kind": "threshold_crossed", "threshold": 3.0}))
    at = dt.datetime(2026, 3, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    fired = evaluate(engine, te, change(at=at, before=2.0, after=3.5))
    assert fired[0].at == dt.datetime(2026, 3, 1, 12, 0)
    assert fired[0].payload["fired_at"] == "2026-03-01T12:00:00.000000Z"
