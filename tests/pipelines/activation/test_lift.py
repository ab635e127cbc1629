"""`propensity lift`: a planted effect is recovered inside its interval; no effect, none found."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from propensity.pipelines.activation.holdout import HoldoutConfig, held_out_by_hash
from propensity.pipelines.activation.lift import (
    label_exposures,
    lift_report,
    newcombe_interval,
)
from propensity.pipelines.activation.triggers import (
    ScoreChange,
    TriggerEngine,
    TriggersConfig,
)
from propensity.pipelines.cli import main
from propensity.pipelines.serve.db import database_url, make_engine

T0 = dt.datetime(2026, 1, 5, 9, 0)
BASE = {"hot": 0.20, "warm": 0.08}


def planted_world(n: int, effect: float, seed: int, share: float = 0.5, experiment: str = "exp"):
    """Exposures of ``n`` contacts over two weeks and outcomes: treated convert ``effect`` more (absolute)."""
    rng = np.random.default_rng(seed)
    ids = [f"c{seed}-{i}" for i in range(n)]
    held = np.array([held_out_by_hash(experiment, c, share) for c in ids])
    band = np.where(rng.random(n) < 0.4, "hot", "warm")
    at = pd.Timestamp(T0) + pd.to_timedelta(rng.uniform(0, 14, n), unit="D")
    rate = np.array([BASE[b] for b in band]) + np.where(held, 0.0, effect)
    converts = rng.random(n) < rate
    exposures = pd.DataFrame({"source": "became_hot", "contact_id": ids, "band": band,
                              "at": at.astype("datetime64[us]"), "held_out": held})
    ts = at[converts] + pd.to_timedelta(rng.uniform(0, 29.9, converts.sum()), unit="D")
    # noise that must not count: outcomes before the exposure and after the 30-day window
    early = at - pd.to_timedelta(rng.uniform(0.1, 20, n), unit="D")
    late = at + pd.to_timedelta(rng.uniform(30.01, 60, n), unit="D")
    noise = rng.random(n) < 0.3
    outcomes = pd.DataFrame({
        "contact_id": [*np.array(ids)[converts], *np.array(ids)[noise], *np.array(ids)[noise]],
        "ts": pd.Series([*ts, *early[noise], *late[noise]]).astype("datetime64[us]"),
        "outcome": "won"})
    return exposures, outcomes, converts, held


CONFIG = HoldoutConfig(experiment="exp", share=0.5, window_days=30)
END = dt.datetime(2026, 6, 1)


def test_a_planted_effect_is_recovered_inside_its_interval_per_band_and_overall():
    exposures, outcomes, converts, held = planted_world(8000, effect=0.06, seed=1)
    report = lift_report(exposures, outcomes, CONFIG, data_end=END)
    table = report.table.set_index("band")
    assert list(table.index) == ["hot", "warm", "(all)"]
    for band in table.index:
        row = table.loc[band]
        assert row["difference_low"] < 0.06 < row["difference_high"], band
        assert row["difference_low"] > 0 and row["effect"] == "more", band
    overall = table.loc["(all)"]
    # the counts are the planted ones (labelling found exactly the in-window conversions)
    assert overall["treated"] == (~held).sum() and overall["held_out"] == held.sum()
    assert overall["treated_converted"] == converts[~held].sum()
    assert overall["held_out_converted"] == converts[held].sum()
    expected_incremental = 0.06 * (~held).sum()
    assert overall["incremental_low"] < expected_incremental < overall["incremental_high"]
    assert overall["incremental"] == pytest.approx(overall["difference"] * overall["treated"])
    assert report.still_open == 0 and report.exposures == 8000


def test_no_planted_effect_reports_none_found():
    exposures, outcomes, _, _ = planted_world(8000, effect=0.0, seed=2)
    table = lift_report(exposures, outcomes, CONFIG, data_end=END).table
    assert (table["difference_low"] < 0).all() and (table["difference_high"] > 0).all()
    assert set(table["effect"]) == {"none found"}


def test_the_interval_covers_the_planted_effect_at_about_its_level():
    covered = 0
    for seed in range(40):
        exposures, outcomes, _, _ = planted_world(600, effect=0.05, seed=100 + seed)
        row = lift_report(exposures, outcomes, CONFIG, data_end=END).table.iloc[-1]
        covered += row["difference_low"] <= 0.05 <= row["difference_high"]
    assert covered >= 34  # 95% nominal: fewer than 34 of 40 has probability < 1%


def test_newcombe_matches_the_published_example():
    # Newcombe (1998), Table II, example (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339
    low, high = newcombe_interval(56, 70, 48, 80)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)


def test_only_outcomes_inside_a_closed_window_count():
    exposures = pd.DataFrame({"source": "t", "contact_id": ["a", "b", "c", "d"], "band": "hot",
                              "at": pd.Series([T0] * 3 + [T0 + dt.timedelta(days=25)]).astype("datetime64[us]"),
                              "held_out": [False, False, True, False]})
    outcomes = pd.DataFrame({"contact_id": ["a", "b", "b", "c", "d"], "outcome": ["won", "won", "lost", "won", "won"],
                             "ts": pd.Series([T0, T0 - dt.timedelta(seconds=1), T0 + dt.timedelta(days=1),
                                              T0 + dt.timedelta(days=30), T0 + dt.timedelta(days=26)]
                                             ).astype("datetime64[us]")})
    end = T0 + dt.timedelta(days=40)
    labelled = label_exposures(exposures, outcomes, 30, end, outcome="won")
    # a: at the instant of exposure counts; b: before it, or another outcome, not; c: at the window's end, not
    assert list(labelled["converted"]) == [True, False, False, True]
    assert list(labelled["closed"]) == [True, True, True, False]
    assert list(label_exposures(exposures, outcomes, 30, end)["converted"]) == [True, True, False, True]
    report = lift_report(exposures, outcomes, HoldoutConfig(experiment="e", share=0.1, outcome="won"), data_end=end)
    assert report.still_open == 1 and report.table.iloc[-1]["treated"] == 2
    assert any("not closed" in note for note in report.notes)


def test_propensity_lift_reads_the_services_exposures_and_the_workspaces_outcomes(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    ws = tmp_path / "ws"
    ws.mkdir()
    triggers = tmp_path / "triggers.yaml"
    triggers.write_text("bands: [cold, warm, hot]\ntriggers:\n  - {name: became_hot, kind: band_entered, band: hot}\n"
                        "holdout: {experiment: exp, share: 0.5, window_days: 30}\n")
    config = TriggersConfig.model_validate({"bands": ["cold", "warm", "hot"],
                                            "triggers": [{"name": "became_hot", "kind": "band_entered",
                                                          "band": "hot"}],
                                            "holdout": {"experiment": "exp", "share": 0.5, "window_days": 30}})
    exposures, outcomes, _, _ = planted_world(300, effect=0.3, seed=7)
    engine = make_engine(database_url(ws, env={}))
    from propensity.pipelines.activation.tables import create_activation_tables

    create_activation_tables(engine)
    te = TriggerEngine(config)
    with engine.begin() as conn:  # the real firing path writes the exposures
        for row in exposures.itertuples():
            te.evaluate(conn, ScoreChange(row.contact_id, row.at.to_pydatetime(), 1.0, 4.0, "cold", "hot", 1.0, 9.0))
    engine.dispose()
    path = tmp_path / "outcomes.csv"
    outcomes.assign(outcome_id=[f"o{i}" for i in range(len(outcomes))]).to_csv(path, index=False)
    assert main(["-w", str(ws), "ingest", "outcomes", str(path)]) == 0
    capsys.readouterr()
    assert main(["-w", str(ws), "lift", "--triggers", str(triggers), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    overall = printed["rows"][-1]
    expected = lift_report(exposures.assign(band="hot"), outcomes, config.holdout).table.iloc[-1]
    assert (overall["treated"], overall["held_out"]) == (expected["treated"], expected["held_out"])
    assert overall["treated_converted"] == expected["treated_converted"]
    assert overall["difference_low"] == pytest.approx(expected["difference_low"])
    assert printed["still_open"] == expected_open(exposures, outcomes)
    assert main(["-w", str(ws), "lift", "--triggers", str(triggers)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "became_hot" in text and f"{overall['treated_converted']:,} of {overall['treated']:,}" in text
    # a triggers file without a holdout is a clear error (rc 2)
    triggers.write_text("bands: [cold, hot]\n")
    assert main(["-w", str(ws), "lift", "--triggers", str(triggers)]) == 2
    assert "no holdout section" in " ".join(capsys.readouterr().err.split())


def expected_open(exposures: pd.DataFrame, outcomes: pd.DataFrame) -> int:
    return int((exposures["at"] + pd.Timedelta(days=30) > outcomes["ts"].max()).sum())
