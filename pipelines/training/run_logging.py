"""Log one training run to MLflow: config, fingerprint, metrics per split, plots, artifacts."""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

from propensity.features.store import Workspace
from propensity.pipelines.training.config import TrainConfig
from propensity.pipelines.training.context import (
    CONTEXT_FILES,
    context_folder,
    write_context,
)
from propensity.pipelines.training.tracking import (
    configure_tracking,
    log_scorer_model,
    promote_if_better,
)

__all__ = ["flatten", "log_training", "metric_values", "plot_calibration"]


def flatten(data: dict, prefix: str = "") -> dict[str, str]:
    """Nested config -> flat MLflow params (``model.n_trials``)."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:500]
    return flat


def metric_values(metrics: pd.DataFrame) -> dict[str, float]:
    """``model.split.metric -> value`` of the metrics table, NaNs left out (MLflow refuses them)."""
    values = {}
    for row in metrics.itertuples(index=False):
        for metric, value in row._asdict().items():
            if metric in ("model", "split") or value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            values[f"{row.model}.{row.split}.{metric}"] = float(value)
    return values


def plot_calibration(frame: pd.DataFrame, models: dict[str, str], path: Path) -> Path:
    """Reliability diagram of each model's probability on the test split (drawn from computed bins)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    test = frame[frame["split"] == "test"]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    top = 0.0
    for name, column in models.items():
        observed, predicted = calibration_curve(test["label"], test[column], n_bins=10, strategy="quantile")
        ax.plot(predicted, observed, marker="o", label=name)
        top = max(top, float(predicted.max()), float(observed.max()))
    ax.set_xlim(0, min(1, top * 1.1 + 0.01)); ax.set_ylim(0, min(1, top * 1.1 + 0.01))
    ax.set_xlabel("predicted probability"); ax.set_ylabel("observed conversion rate")
    ax.set_title("calibration on the test split"); ax.legend()
    fig.tight_layout(); fig.savefig(path, dpi=100); plt.close(fig)
    return path


def log_training(ws: Workspace, config: TrainConfig, result, frame: pd.DataFrame, coefficients: pd.DataFrame) -> None:
    """Log ``result`` as one MLflow run; register the learned model and maybe promote it."""
    result.tracking_uri = configure_tracking(ws.path, config.mlflow.tracking_uri, config.mlflow.experiment)
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as tmp:
        result.run_id = run.info.run_id
        mlflow.log_params(flatten(config.model_dump(mode="json")))
        # the feature set as built (windows and half-lives chosen from the data when `auto`)
        mlflow.log_params(flatten({"feature_config": result.summary["feature_config"]}))
        mlflow.set_tags({"data_fingerprint": result.summary["fingerprint"], "points_only": str(result.points_only),
                         "leakage_allowed": ",".join(result.leakage_allowed) or "none"})
        attributes = result.summary.get("attributes") or {}
        if attributes.get("dropped"):  # never silently: the run says which contacts columns the guard left out
            mlflow.set_tags({"attributes_dropped": ",".join(attributes["dropped"])[:500]})
        search = result.summary.get("search")
        if search is not None:  # a search the time limit cut depends on load: say so on the run
            mlflow.set_tags({"search_cut_by_time_budget": str(search["cut_by_time_budget"]),
                             **({"search_note": search["note"]} if "note" in search else {})})
        # one request for every metric: one log_metric call each took most of the step under load
        mlflow.log_metrics(metric_values(result.metrics)
                           | ({} if search is None else {"search.trials_completed": float(search["trials_completed"]),
                                                         "search.fit_seconds": float(search["fit_seconds"])}))
        if result.scorer is not None:  # the hyperparameters the search chose, beside the config
            mlflow.log_params({f"tuned.{k}": str(v)[:500] for k, v in result.scorer.metadata.get("params", {}).items()})
        mlflow.log_dict(result.summary, "summary.json")
        mlflow.log_artifact(str(result.learned_rules_path))
        folder = Path(tmp)
        result.metrics.to_csv(folder / "metrics.csv", index=False)
        coefficients.to_csv(folder / "learned_points.csv", index=False)
        mlflow.log_artifact(str(folder / "metrics.csv"))
        mlflow.log_artifact(str(folder / "learned_points.csv"))
        probabilities = {"rules": "rule_probability", "learned points": "points_probability"}
        if result.scorer is not None:
            probabilities = {"learned": "probability", **probabilities}
            result.importance.to_csv(folder / "feature_importance.csv", index=False)
            mlflow.log_artifact(str(folder / "feature_importance.csv"))
        mlflow.log_artifact(str(plot_calibration(frame, probabilities, folder / "calibration.png")))
        context = write_context(config, result, folder / "context")
        mlflow.log_artifacts(str(context), artifact_path="context")
        if result.scorer is None:
            return
        test = frame[frame["split"] == "test"]
        _, result.model_version = log_scorer_model(result.scorer, frame[frame["split"] == "train"], config.mlflow.model_name)
        kept = context_folder(ws.path, config.mlflow.model_name, result.model_version)
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(context, kept)
        result.learned_rules_path = kept / CONTEXT_FILES["learned_rules"]
        result.context_path = kept
        result.registry = promote_if_better(
            config.mlflow.model_name, result.model_version, test, result.scorer.feature_names, config.promotion,
            feature_config=result.scorer.feature_config, event_types=result.scorer.event_types,
        )
