"""`propensity demo`: a synthetic SaaS world end to end, in the user's workspace."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from propensity.features.config import FeatureConfig
from propensity.features.store import Workspace, ingest_file
from propensity.pipelines.jobs import SpineChoice, run_features, run_rule_scores
from propensity.pipelines.outputs import write_frame
from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world
from propensity.pipelines.training.labels import label_spine

__all__ = ["DemoResult", "band_summary", "run_demo"]


@dataclass
class DemoResult:
    as_of: datetime
    horizon_days: int
    ingest: dict = field(default_factory=dict)
    feature_rows: int = 0
    feature_columns: int = 0
    bands: pd.DataFrame | None = None
    paths: dict[str, Path] = field(default_factory=dict)
    training: object | None = None  # TrainResult when the demo trained a model
    comparison: object | None = None  # propensity.pipelines.compare.Comparison when the demo compared models


def band_summary(scored: pd.DataFrame, converted: pd.Series) -> pd.DataFrame:
    """Contacts, share, mean score and conversion rate per band (bands in their own order)."""
    frame = scored.assign(converted=converted.to_numpy())
    grouped = frame.groupby("band", observed=False)
    summary = grouped.agg(
        contacts=("contact_id", "size"),
        mean_score=("rule_score", "mean"),
        conversions=("converted", "sum"),
    )
    summary["share"] = summary["contacts"] / max(len(frame), 1)
    summary["conversion_rate"] = summary["conversions"] / summary["contacts"].where(summary["contacts"] > 0)
    return summary.reset_index()


def run_demo(
    ws: Workspace,
    rules: RuleSet,
    *,
    contacts: int = 20_000,
    days: int = 180,
    seed: int = 0,
    horizon_days: int = 30,
    step: Callable[[str], None] = lambda _: None,
    train_config: Path | None = None,
    compare_config: Path | None = None,
) -> DemoResult:
    """Generate, ingest, build features, rule-score and read conversion per band.

    ``step`` is called with a short label before each stage so the caller can show progress.
    """
    config = WorldConfig(contacts=contacts, days=days, seed=seed)
    step("generate a synthetic SaaS world")
    world = generate_world(config)
    as_of = datetime.combine(config.start, datetime.min.time()) + timedelta(days=days - horizon_days)
    data_dir = ws.path / "demo-data"
    written = write_world(world, data_dir, fmt="parquet", truth_as_of=[as_of.date()], horizon_days=horizon_days)
    result = DemoResult(as_of=as_of, horizon_days=horizon_days)
    result.paths["data"] = data_dir
    for kind in ("contacts", "events", "outcomes"):
        step(f"ingest {kind}")
        result.ingest[kind] = ingest_file(ws, kind, written[kind])
    step("build features")
    choice = SpineChoice(as_of=as_of)
    run = run_features(ws, choice, FeatureConfig())
    result.feature_rows, result.feature_columns = run.rows, len(run.columns)
    result.paths["features"] = run.path
    step("score with the rules")
    scored = run_rule_scores(ws, choice, rules)
    result.paths["scores"] = write_frame(scored, ws.layout.scores / f"rule_scores_{choice.label()}.parquet")
    # Contacts that had converted before the cut-off are left out: they are no longer leads.
    labelled = label_spine(scored, ws.table("outcomes"), horizon_days, data_end=as_of + timedelta(days=horizon_days))
    readout = scored.merge(labelled[["contact_id", "as_of", "label"]], on=["contact_id", "as_of"], how="inner")
    result.bands = band_summary(readout, readout["label"])
    if train_config is not None:
        from propensity.pipelines.training.config import load_train_config
        from propensity.pipelines.training.train import train

        loaded = load_train_config(train_config)
        result.training = train(ws, loaded, step=step)
        result.paths["learned rules"] = result.training.learned_rules_path
        result.paths["MLflow store"] = ws.layout.mlflow_db
        if compare_config is not None:
            from propensity.pipelines.compare import (
                ModelSource,
                compare_models,
                load_compare_config,
                write_report,
            )

            # the model this run trained (registered or not), on the same held-out cut-off
            trained = result.training
            source = ModelSource(uri="this demo's training run", version=trained.model_version, run_id=trained.run_id)
            result.comparison = compare_models(
                ws, loaded, load_compare_config(compare_config), scorer=trained.scorer, source=source,
                learned_rules=trained.learned_rules_path, step=step,
            )
            step("write the comparison report")
            result.paths["compare report"] = write_report(result.comparison, ws.layout.reports)["html"]
    return result
