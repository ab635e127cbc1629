"""Write a feature table computed on Spark (the output of ``propensity features --engine spark``)."""

from __future__ import annotations

from pathlib import Path

import ibis

from propensity.pipelines.engines import EngineTables

__all__ = ["spark_frame", "write_spark_features"]


def spark_frame(tables: EngineTables, expr: ibis.Table, name: str):
    """The Spark DataFrame of an Ibis expression, via a temporary view named ``name``.

    The view registers the expression's in-memory tables (spines) with Spark first.
    """
    view = tables.con.create_view(name, expr, overwrite=True)
    return tables.session.table(view.get_name())


def write_spark_features(tables: EngineTables, expr: ibis.Table, path: Path) -> int:
    """Write ``expr`` with Spark to a Parquet folder (a CSV folder when ``path`` ends in .csv).

    Spark writes one part file per task and no global order (sorting 100M-event outputs
    costs a shuffle for nothing); read the folder with any Parquet reader. Returns the rows.
    """
    frame = spark_frame(tables, expr, "_propensity_features")
    target = str(path)
    if path.suffix.lower() == ".csv":
        frame.write.mode("overwrite").option("header", True).csv(target)
        return tables.session.read.option("header", True).csv(target).count()
    frame.write.mode("overwrite").parquet(target)
    return tables.session.read.parquet(target).count()


def run_spark_features(ws, choice, config, out: Path | None, tables: EngineTables):
    """Build the features of ``choice`` on Spark and write them to a Parquet (or CSV) folder."""
    from propensity.features.build import build_features, feature_columns
    from propensity.pipelines.jobs import FeatureRun, _resolved, resolve_spine

    spine = resolve_spine(tables.con, choice, tables=tables, ws=ws)
    config, types, note, attributes = _resolved(config, tables.events, tables.contacts)
    expr = build_features(tables.events, spine, config, contacts=tables.contacts, event_types=types)
    path = Path(out) if out is not None else ws.layout.features / f"features_{choice.label()}"
    rows = write_spark_features(tables, expr, path)
    return FeatureRun(table=None, path=path, rows=rows, columns=feature_columns(expr), note=note,
                      attributes=attributes)
