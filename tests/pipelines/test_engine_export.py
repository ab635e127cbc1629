"""The workspace export for Spark (issue 15 item 13): a path with a quote in it."""

import pandas as pd

from propensity.features.store import Workspace
from propensity.pipelines.engines import _export_workspace


def test_the_export_for_spark_works_in_a_folder_whose_name_has_a_quote(tmp_path):
    ws = Workspace(tmp_path / "o'brien's workspace")
    frame = pd.DataFrame({"contact_id": ["a", "b"], "event_type": ["v", "v"], "ts": ["2026-01-01", "2026-01-02"]})
    ws.ingest_relation("events", frame, "e.csv", now="2026-02-01")
    sources = _export_workspace(ws)
    exported = pd.read_parquet(sources.events.parquet)
    assert sorted(exported["contact_id"]) == ["a", "b"]
    assert "o'brien's workspace" in sources.events.parquet and sources.contacts is None
