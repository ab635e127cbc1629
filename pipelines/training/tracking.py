"""MLflow: one run per training, the learned scorer as a pyfunc, the registry alias `champion`.

The store defaults to the workspace (``sqlite:///<ws>/mlflow.db``, artifacts in
``<ws>/mlartifacts``) so nothing is written outside it; ``MLFLOW_TRACKING_URI`` or the config's
``mlflow.tracking_uri`` point it elsewhere.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from propensity.features.layout import WorkspaceLayout
from propensity.pipelines.training.config import PromotionSection
from propensity.pipelines.training.pyfunc import PropensityPyfunc, copy_package_code, pip_requirements
from propensity.pipelines.training.scorer import LearnedScorer

__all__ = [
    "CHAMPION",
    "PropensityPyfunc",
    "RegistryDecision",
    "configure_tracking",
    "gain_over_rules",
    "log_scorer_model",
    "promote_if_better",
]

CHAMPION = "champion"

# mlflow.set_tracking_uri also exports $MLFLOW_TRACKING_URI; without remembering which values were
# our own workspace defaults, a second workspace in the same process would silently log into the first.
_WORKSPACE_URIS_SET: set[str] = set()


def configure_tracking(workspace_path: Path, configured_uri: str | None, experiment: str) -> str:
    """Point MLflow at the right store and experiment; returns the tracking URI used."""
    # MLflow's INFO lines and artifact progress bars would interleave with our own progress output.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env in _WORKSPACE_URIS_SET:
        from_env = None  # exported by our own earlier call, not the user's choice
    uri = configured_uri or from_env
    if not uri:
        workspace_path.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{WorkspaceLayout(workspace_path).mlflow_db.resolve()}"
        _WORKSPACE_URIS_SET.add(uri)
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:") and mlflow.get_experiment_by_name(experiment) is None:
        artifacts = (WorkspaceLayout(workspace_path).mlartifacts / experiment).resolve()
        mlflow.create_experiment(experiment, artifact_location=artifacts.as_uri())
    mlflow.set_experiment(experiment)
    return uri


def log_scorer_model(scorer: LearnedScorer, example: pd.DataFrame, model_name: str) -> tuple[str, str]:
    """Log the scorer as a pyfunc in the active run and register it; returns (model_uri, version)."""
    features = example[scorer.feature_names].head(200).reset_index(drop=True)
    # Counts are int64 and never NULL (0 when nothing happened), so the signature keeps the
    # feature build's own dtypes; MLflow refuses int64 input against a double column (its hint
    # about integer columns is therefore silenced with the rest).
    output = scorer.score(features)
    with quiet_mlflow():
        signature = infer_signature(features, output)
    with tempfile.TemporaryDirectory() as tmp, quiet_mlflow():
        folder = scorer.save(Path(tmp) / "scorer")
        code = copy_package_code(Path(tmp) / "code")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=PropensityPyfunc(),
            artifacts={"scorer": str(folder)},
            signature=signature,
            input_example=features.head(3),
            pip_requirements=pip_requirements(),
            code_paths=[str(code)],
            registered_model_name=model_name,
        )
    return info.model_uri, str(info.registered_model_version)


VERBOSE_ENV = "PROPENSITY_VERBOSE"


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    """MLflow's notes while a model is logged and registered, kept out of normal output.

    It prints "Successfully registered model" / "Created version" to stderr, warns that a Python
    object is pickled (our own importable class: intended) and hints about integer columns
    (intended, see :func:`log_scorer_model`). ``$PROPENSITY_VERBOSE`` (``propensity --verbose``)
    shows them. Errors still raise.
    """
    if os.environ.get(VERBOSE_ENV):
        yield
        return
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")
            yield
    finally:
        logger.setLevel(level)


@dataclass(frozen=True)
class RegistryDecision:
    version: str
    promoted: bool
    reason: str
    previous_champion: str | None = None
    previous_test_auc: float | None = None
    gain: float | None = None  # test ROC-AUC of the learned score minus the rule score's
    gain_low: float | None = None  # its paired bootstrap interval
    gain_high: float | None = None


def gain_over_rules(labels: np.ndarray, learned_score: np.ndarray, rule_score: np.ndarray,
                    promotion: PromotionSection) -> tuple[float, float, float]:
    """ROC-AUC of the learned 0-5 score minus the rule score's on the same rows, with its paired
    bootstrap interval: ``(gain, low, high)``."""
    from sklearn.metrics import roc_auc_score

    from propensity.pipelines.training.bootstrap import interval, paired_bootstrap

    boot = paired_bootstrap(labels, {"learned": learned_score, "rules": rule_score}, promotion.n_boot, promotion.seed)
    low, high = interval(boot["learned"].roc_auc - boot["rules"].roc_auc, promotion.alpha)
    gain = float(roc_auc_score(labels, learned_score) - roc_auc_score(labels, rule_score))
    return gain, float(low), float(high)


def promote_if_better(
    model_name: str,
    version: str,
    test: pd.DataFrame,
    feature_names: list[str],
    promotion: PromotionSection,
    feature_config: dict | None = None,
    event_types: tuple[str, ...] = (),
) -> RegistryDecision:
    """Move `champion` to ``version`` only if it beats the rules, beyond chance, and the current champion.

    ``test`` holds the test rows: ``label``, ``rule_score``, ``learned_score`` and the features.
    Every model is measured on its own 0-5 score. Against the rules the lower end of the paired
    bootstrap interval of the gain must clear ``promotion.margin``. The current champion is
    re-scored on *this* test split, so both are judged on the same rows; if it cannot score them
    (different features), its recorded test AUC is used and the reason says so.
    """
    from sklearn.metrics import roc_auc_score

    labels = test["label"].to_numpy()
    learned = test["learned_score"].to_numpy(dtype="float64")
    new_auc = float(roc_auc_score(labels, learned))
    rules_auc = float(roc_auc_score(labels, test["rule_score"].to_numpy(dtype="float64")))
    gain, low, high = gain_over_rules(labels, learned, test["rule_score"].to_numpy(dtype="float64"), promotion)
    client = MlflowClient()
    for tag, value in (("test_roc_auc", new_auc), ("rules_test_roc_auc", rules_auc), ("gain_over_rules", gain),
                       ("gain_over_rules_low", low), ("gain_over_rules_high", high)):
        client.set_model_version_tag(model_name, version, tag, f"{value:.6f}")
    try:
        current = client.get_model_version_by_alias(model_name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        current = None
    stays = f"champion stays v{current.version}" if current is not None else "no champion yet"
    versus = (f"test ROC-AUC {new_auc:.4f} vs the rules' {rules_auc:.4f}: gain {gain:+.4f} "
              f"(paired {1 - promotion.alpha:.0%} CI {low:+.4f} to {high:+.4f})")
    facts = {"gain": gain, "gain_low": low, "gain_high": high}
    if not low > promotion.margin:
        return RegistryDecision(version, False, f"{versus} is not above the margin {promotion.margin:g}: "
                                f"registered, not promoted ({stays})",
                                None if current is None else current.version, **facts)
    if current is None:
        client.set_registered_model_alias(model_name, CHAMPION, version)
        return RegistryDecision(version, True, f"first champion: {versus}", **facts)
    try:
        champion = mlflow.pyfunc.load_model(f"models:/{model_name}@{CHAMPION}")
        theirs = champion.unwrap_python_model().scorer
        if (theirs.feature_config, tuple(theirs.event_types)) != (feature_config, tuple(event_types)):
            # same column names can mean different numbers under another feature config
            raise ValueError("the champion was trained on features built differently")
        champion_auc = float(roc_auc_score(labels, champion.predict(test[feature_names])["learned_score"]))
        basis = "re-scored on this test split"
    except Exception as exc:  # a champion from other data or features: fall back to its record
        champion_auc = float(current.tags.get("test_roc_auc", "nan"))
        basis = f"its recorded test AUC (not re-scored: {exc})"
    if np.isnan(champion_auc) or new_auc > champion_auc:
        client.set_registered_model_alias(model_name, CHAMPION, version)
        return RegistryDecision(version, True, f"{versus}; beats champion v{current.version} "
                                f"({champion_auc:.4f}, {basis})", current.version, champion_auc, **facts)
    return RegistryDecision(version, False, f"{versus}; does not beat champion v{current.version} "
                            f"({champion_auc:.4f}, {basis}): {stays}", current.version, champion_auc, **facts)


def log_json(name: str, payload: dict) -> None:
    mlflow.log_text(json.dumps(payload, indent=2, default=str), name)
