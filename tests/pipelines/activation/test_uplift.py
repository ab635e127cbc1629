"""The optional uplift model finds whom a trigger moves, where the propensity ranking cannot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from propensity.pipelines.activation.uplift import compare_uplift, uplift_unavailable

pytestmark = pytest.mark.skipif(uplift_unavailable() is not None, reason=str(uplift_unavailable()))


def world(n: int, seed: int, effect: float) -> pd.DataFrame:
    """Propensity rises with x0; the trigger adds ``effect`` to the conversion of contacts with x1 > 0 only."""
    rng = np.random.default_rng(seed)
    x0, x1 = rng.normal(size=n), rng.normal(size=n)
    held = rng.random(n) < 0.5
    base = 1 / (1 + np.exp(-(x0 - 1.5)))
    rate = np.clip(base + np.where(~held & (x1 > 0), effect, 0.0), 0, 1)
    return pd.DataFrame({"at": pd.Timestamp("2026-01-01") + pd.to_timedelta(np.sort(rng.uniform(0, 30, n)), unit="D"),
                         "held_out": held, "converted": rng.random(n) < rate, "x0": x0, "x1": x1,
                         "rule_score": np.clip(np.round(2.5 + x0, 1), 0, 5)})


def test_the_uplift_model_ranks_the_moved_contacts_above_the_likely_ones():
    result = compare_uplift(world(8000, 1, effect=0.25), ["x0", "x1"], "rule_score", source="became_hot")
    table = result.table.set_index("ranking")
    assert result.fit_rows == 4000 and result.evaluated_rows == 4000
    assert table.loc["uplift model", "qini"] > table.loc["propensity (rule score)", "qini"] + 0.05
    assert table.loc["uplift model", "uplift_at_k"] > table.loc["propensity (rule score)", "uplift_at_k"]
    # the top 30% by uplift are mostly x1 > 0 contacts: their true uplift is the planted 0.25
    assert 0.1 < table.loc["uplift model", "uplift_at_k"] < 0.4


def test_an_arm_without_both_outcomes_is_a_clear_error():
    frame = world(400, 2, effect=0.2)
    frame.loc[frame["held_out"], "converted"] = False
    with pytest.raises(ValueError, match="held-out contacts all did not convert"):
        compare_uplift(frame, ["x0", "x1"], "rule_score", source="became_hot")


def test_propensity_lift_uplift_fits_on_the_rules_points_at_each_exposure(tmp_path, monkeypatch, capsys):
    import datetime as dt
    import json

    from propensity.pipelines.activation.holdout import (
        HoldoutConfig,
        held_out_by_hash,
        record_exposures,
    )
    from propensity.pipelines.activation.tables import create_activation_tables
    from propensity.pipelines.cli import main
    from propensity.pipelines.project import Project
    from propensity.pipelines.serve.db import database_url, make_engine
    from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world

    monkeypatch.delenv("DATABASE_URL", raising=False)
    world = generate_world(WorldConfig(contacts=2400, days=60, seed=11))
    write_world(world, tmp_path / "world", fmt="csv")
    ws = tmp_path / "ws"
    for kind in ("contacts", "events"):
        assert main(["-w", str(ws), "ingest", kind, str(tmp_path / "world" / f"{kind}.csv")]) == 0
    from propensity.pipelines.shipped import shipped_config

    saas = shipped_config("rules/saas.yaml")
    start = pd.Timestamp(world.events["ts"].min()).normalize() + pd.Timedelta(days=45)
    scored, _ = Project(ws).score(start.to_pydatetime(), rules=saas)
    rng = np.random.default_rng(3)
    ids = scored["contact_id"].astype(str).tolist()
    held = {c for c in ids if held_out_by_hash("upl", c, 0.5)}
    # the trigger moves contacts in the target industry only (a fit rule), whatever their score
    moved = scored["points__industry_target"].to_numpy() > 0
    rate = 0.05 + 0.06 * scored["rule_score"].to_numpy() + np.where(
        moved & ~np.isin(ids, list(held)), 0.4, 0.0)
    converts = rng.random(len(ids)) < np.clip(rate, 0, 1)
    at = [start.to_pydatetime() + dt.timedelta(seconds=i) for i in range(len(ids))]
    engine = make_engine(database_url(ws, env={}))
    create_activation_tables(engine)
    config = HoldoutConfig(experiment="upl", share=0.5, window_days=7)
    with engine.begin() as conn:
        for contact, when in zip(ids, at):
            record_exposures(conn, config, "became_hot", [(contact, "hot", contact in held)], when)
    engine.dispose()
    outcomes = pd.DataFrame({"outcome_id": [f"o{i}" for i in range(int(converts.sum()))],
                             "contact_id": np.array(ids)[converts],
                             "ts": [a + dt.timedelta(days=1) for a, c in zip(at, converts) if c]})
    outcomes.loc[len(outcomes)] = ["o-end", ids[0], start.to_pydatetime() + dt.timedelta(days=20)]
    outcomes.to_csv(tmp_path / "outcomes.csv", index=False)
    assert main(["-w", str(ws), "ingest", "outcomes", str(tmp_path / "outcomes.csv")]) == 0
    triggers = tmp_path / "triggers.yaml"
    triggers.write_text("bands: [cold, warm, hot]\ntriggers:\n  - {name: became_hot, kind: band_entered, band: hot}\n"
                        "holdout: {experiment: upl, share: 0.5, window_days: 7}\n")
    capsys.readouterr()
    assert main(["-w", str(ws), "lift", "--triggers", str(triggers), "--uplift", "became_hot",
                 "--rules", str(saas), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    rankings = {r["ranking"]: r for r in printed["uplift"]["rankings"]}
    assert printed["uplift"]["fit_rows"] + printed["uplift"]["evaluated_rows"] == len(ids)
    assert rankings["uplift model"]["qini"] > rankings["propensity (rule score)"]["qini"]
    assert rankings["uplift model"]["uplift_at_k"] > rankings["propensity (rule score)"]["uplift_at_k"]
    assert printed["rows"][-1]["effect"] == "more"
