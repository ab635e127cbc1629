"""Fit x engagement: the two sub-scores, the A1-D4 cell, its configurable edges, and `score` writing them."""

from datetime import datetime
from pathlib import Path

import ibis
import numpy as np
import pandas as pd
import pytest
from propensity.pipelines.cli import main
from propensity.pipelines.rules.config import RuleSet, dump_rules, load_rules
from propensity.pipelines.rules.score import assign_cells, score_contacts
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[2]
AS_OF = datetime(2025, 6, 1)


def rules(matrix=None, enrich_axis="fit") -> RuleSet:
    return RuleSet.model_validate({
        "name": "m",
        "activities": [
            {"name": "demo", "event": "demo", "points": 60},
            {"name": "email", "event": "email", "points": 10},
            {"name": "enriched", "event": "enriched", "points": 7, "axis": enrich_axis},
        ],
        "fit": [{"name": "size", "attribute": "size", "min": 50, "points": 20}],
        "scale": {0: 0, 100: 5},
        "bands": [{"name": "cold", "min_score": 0}, {"name": "hot", "min_score": 3}],
        **({"matrix": matrix} if matrix else {}),
    })


MATRIX = {"fit": [7, 20, 27], "engagement": [10, 60, 70]}


def scored(rule_set: RuleSet) -> pd.DataFrame:
    events = pd.DataFrame({
        "contact_id": ["a", "a", "b", "b", "c", "d", "d"],
        "event_type": ["demo", "enriched", "email", "demo", "email", "enriched", "email"],
        "ts": pd.Series([AS_OF.replace(day=1, month=5)] * 7).astype("datetime64[us]"),
        "value": 1.0, "properties": pd.Series([None] * 7, dtype="string"),
    })
    contacts = pd.DataFrame({"contact_id": ["a", "b", "c", "d", "e"], "size": [100, 10, 60, 5, 500]})
    spine = pd.DataFrame({"contact_id": list("abcde"), "as_of": pd.Series([AS_OF] * 5).astype("datetime64[us]")})
    con = ibis.duckdb.connect()
    out = score_contacts(con.create_table("events", events), con.create_table("spine", spine), rule_set, contacts)
    return out.set_index("contact_id")


def test_fit_and_engagement_points_split_the_total_by_the_rules_axes():
    out = scored(rules(MATRIX))
    np.testing.assert_allclose(out["fit_points"] + out["engagement_points"], out["points"], atol=1e-12)
    # fit: the size criterion and the enrichment event (axis: fit); engagement: demo and email
    assert out["fit_points"].to_dict() == {"a": 27.0, "b": 0.0, "c": 20.0, "d": 7.0, "e": 20.0}
    assert out["engagement_points"].to_dict() == {"a": 60.0, "b": 70.0, "c": 10.0, "d": 10.0, "e": 0.0}
    # edges are inclusive: a is A (27 >= 27) and 2 (60 >= 60); b is D and 1 (70 >= 70)
    assert out["cell"].astype(str).to_dict() == {"a": "A2", "b": "D1", "c": "B3", "d": "C3", "e": "B4"}
    # the same event counted as engagement moves d from C3 to D3
    moved = scored(rules(MATRIX, enrich_axis="engagement"))
    assert moved.loc["d", "cell"] == "D3" and moved.loc["d", "engagement_points"] == 17.0


def test_cells_are_categories_best_first_and_edges_are_configurable():
    low = rules({"fit": [1, 2, 3], "engagement": [1, 2, 3]})
    cells = assign_cells(np.array([0, 3, 2.5]), np.array([0, 3, 1]), low)
    assert list(cells.astype(str)) == ["D4", "A1", "B3"]
    assert list(cells.categories[:5]) == ["A1", "A2", "A3", "A4", "B1"] and len(cells.categories) == 16


def test_rules_without_a_matrix_still_score_and_get_both_sub_scores_but_no_cell():
    out = scored(rules())
    assert "cell" not in out and {"fit_points", "engagement_points"} <= set(out.columns)
    with pytest.raises(ValueError, match="no matrix section"):
        assign_cells(np.zeros(1), np.zeros(1), rules())


@pytest.mark.parametrize("matrix", [{"fit": [5, 5, 9], "engagement": [1, 2, 3]},
                                    {"fit": [1, 2], "engagement": [1, 2, 3]},
                                    {"fit": [1, 2, 3], "engagement": [1, 2, 3], "grades": 4}])
def test_a_bad_matrix_is_refused(matrix):
    with pytest.raises(ValidationError):
        rules(matrix)


def test_the_matrix_and_a_fit_activity_survive_dump_and_load(tmp_path):
    original = rules(MATRIX)
    path = tmp_path / "r.yaml"
    path.write_text(dump_rules(original))
    assert load_rules(path) == original
    assert "axis: engagement" not in path.read_text() and "axis: fit" in path.read_text()


def test_score_writes_the_sub_scores_and_the_cell_and_prints_the_matrix(tmp_path, capsys):
    from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world

    world = generate_world(WorldConfig(contacts=300, days=60, seed=5))
    write_world(world, tmp_path / "world", fmt="csv")
    ws = tmp_path / "ws"
    for kind in ("contacts", "events"):
        assert main(["-w", str(ws), "ingest", kind, str(tmp_path / "world" / f"{kind}.csv")]) == 0
    out = tmp_path / "scores.csv"
    saas = ROOT / "configs" / "rules" / "saas.yaml"
    assert main(["-w", str(ws), "score", "--rules", str(saas), "--as-of", "2025-03-01", "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    shipped = load_rules(saas)
    assert frame["fit_points"].max() <= sum(f.points for f in shipped.fit)
    expected = assign_cells(frame["fit_points"], frame["engagement_points"], shipped).astype(str)
    assert list(frame["cell"]) == list(expected) and frame["cell"].nunique() > 2
    printed = " ".join(capsys.readouterr().out.split())
    assert "fit x engagement" in printed
    a_row = frame["cell"].str[0].eq("A")
    assert f"{int((frame['cell'] == 'A1').sum()):,}" in printed and a_row.any()
    assert main(["-w", str(ws), "score", "--rules", str(saas), "--as-of", "2025-03-01", "--out", str(out),
                 "--json"]) == 0
    import json

    summary = json.loads(capsys.readouterr().out)
    assert sum(summary["cells"].values()) == len(frame) == summary["rows"]
