"""Batch scoring on Spark with the registered MLflow model (``mapInPandas``).

The features are built on Spark by the same Ibis expressions as on one machine; each Spark
task then runs the registered pyfunc on its Arrow batches. The loaded model travels to the
executors inside the task closure (cloudpickle: the LightGBM booster pickles as its model text),
so executors need the Python packages (``propensity`` and its pins) but no access to the
MLflow store.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from propensity.features.store import Workspace
from propensity.pipelines.engines import EngineTables
from propensity.pipelines.jobs import (
    SpineChoice,
    load_model,
    model_bands,
    resolve_spine,
)
from propensity.pipelines.rules.score import assign_bands
from propensity.pipelines.spark.features import spark_frame
from propensity.pipelines.training.as_trained import features_as_trained

__all__ = ["SparkScoreRun", "SCORE_SCHEMA", "run_spark_model_scores", "score_frame_with_model"]

KEYS = ("contact_id", "as_of")
SCORE_SCHEMA = "contact_id string, as_of timestamp, probability double, learned_score double, band string"


@dataclass(frozen=True)
class SparkScoreRun:
    path: Path
    rows: int
    bands: pd.DataFrame  # band, rows


def score_frame_with_model(features, pyfunc, feature_names: list[str], bands=None):
    """Spark DataFrame of features -> ``contact_id, as_of, probability, learned_score, band``.

    Parameters
    ----------
    features : pyspark.sql.DataFrame
        Keys and at least ``feature_names``.
    pyfunc : mlflow.pyfunc.PyFuncModel
        The registered model (outputs ``probability`` and ``learned_score``).
    feature_names : list of str
        The model's input columns, in order.
    bands : RuleSet, optional
        Bands for ``learned_score`` (the model's rules'); ``band`` is NULL without.
    """
    names = list(feature_names)

    def predict(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if batch.empty:
                continue
            scores = pyfunc.predict(batch[names].reset_index(drop=True))
            out = pd.DataFrame({
                "contact_id": batch["contact_id"].to_numpy(),
                "as_of": batch["as_of"].to_numpy(),
                "probability": scores["probability"].to_numpy(dtype="float64"),
                "learned_score": scores["learned_score"].to_numpy(dtype="float64"),
            })
            out["band"] = (None if bands is None
                           else pd.Series(assign_bands(out["learned_score"], bands)).astype("string"))
            yield out

    return features.select(*KEYS, *names).mapInPandas(predict, SCORE_SCHEMA)


def run_spark_model_scores(
    ws: Workspace, choice: SpineChoice, model: str, model_name: str, tables: EngineTables, out: Path,
    pyfunc=None,
) -> SparkScoreRun:
    """Build the model's features on Spark, score them with the registered pyfunc, write Parquet.

    ``out`` is a Parquet folder (Spark's part files); the band counts are returned for a summary.
    """
    pyfunc = pyfunc or load_model(ws, model, model_name)  # given: loaded by Project.model
    scorer = pyfunc.unwrap_python_model().scorer
    spine = resolve_spine(tables.con, choice, tables=tables, ws=ws)
    expr = features_as_trained(tables.events, spine, scorer, tables.contacts)
    scored = score_frame_with_model(spark_frame(tables, expr, "_propensity_model_features"), pyfunc,
                                    scorer.feature_names, model_bands(scorer))
    scored.write.mode("overwrite").parquet(str(out))
    written = tables.session.read.parquet(str(out))
    bands = written.groupBy("band").count().toPandas().rename(columns={"count": "rows"})
    return SparkScoreRun(path=Path(out), rows=int(bands["rows"].sum()),
                         bands=bands.sort_values("band", na_position="last").reset_index(drop=True))
