"""The training configuration (``configs/train.yaml``), validated once into frozen models."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "CalibrationSection",
    "GridSection",
    "LeakageSection",
    "MlflowSection",
    "ModelSection",
    "PointsSection",
    "PromotionSection",
    "SplitSection",
    "TrainConfig",
    "TrainConfigError",
    "load_train_config",
]


class TrainConfigError(ValueError):
    """A training config that does not validate; the message names the file and the keys."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GridSection(_Section):
    """Cut-offs ``first, first + step, ..., last`` (each contact known then is a spine row)."""

    first: datetime
    last: datetime
    step_days: int = Field(gt=0)


class SplitSection(_Section):
    """Time split: explicit dates, or the last N distinct cut-offs for test and valid."""

    valid_from: datetime | None = None
    test_from: datetime | None = None
    valid_cutoffs: int = Field(default=1, ge=1)
    test_cutoffs: int = Field(default=1, ge=1)
    # a hashed share of contacts before test as valid (cross-sectional data), instead of a cut-off
    valid_fraction: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="after")
    def _valid_one_way(self) -> SplitSection:
        if self.valid_fraction is not None and self.valid_from is not None:
            raise ValueError("give valid_from or valid_fraction, not both")
        return self


class LeakageSection(_Section):
    max_single_feature_auc: float = Field(default=0.98, gt=0.5, le=1.0)
    allow: tuple[str, ...] = ()


class ModelSection(_Section):
    tune: bool = True
    n_trials: int = Field(default=20, ge=1)
    # a safety net only: the trial count decides (a time budget that binds makes figures depend
    # on the machine's load); when it cuts the search, the output and the MLflow run say so
    timeout_seconds: float = Field(default=3600, gt=0)
    seed: int = 0
    early_stopping_rounds: int = Field(default=50, ge=1)
    max_estimators: int = Field(default=2000, ge=10)
    # what keeps trials cheap: each search trial fits on at most `search_rows` train rows (a seeded
    # sample, stratified by label; null: all) for at most `search_max_estimators` rounds; the
    # chosen parameters are then refitted once on every train row, up to `max_estimators`
    search_rows: int | None = Field(default=60_000, ge=1000)
    search_max_estimators: int = Field(default=600, ge=10)


class PointsSection(_Section):
    prior: Literal["zero", "hand"] = "zero"
    l2: float | None = Field(default=None, gt=0)


class CalibrationSection(_Section):
    method: Literal["auto", "isotonic", "platt"] = "auto"
    score_mapping: Literal["rate_matching", "quantile"] = "rate_matching"


class PromotionSection(_Section):
    """When a trained model becomes the champion: its gain over the rules on the test split.

    The gain is ROC-AUC of the learned 0-5 score minus that of the rule score, on the same test
    rows; the model is promoted only when the lower end of the paired bootstrap interval
    (``1 - alpha``, ``n_boot`` resamples) lies above ``margin``. Otherwise it is registered and the
    alias does not move.
    """

    margin: float = Field(default=0.0, ge=0, lt=1)
    n_boot: int = Field(default=1000, ge=100)
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    seed: int = 0


class MlflowSection(_Section):
    # `model_name` is the word MLflow uses; pydantic < 2.10 warns about its "model_" prefix otherwise
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    experiment: str = "propensity"
    model_name: str = "propensity"
    tracking_uri: str | None = None  # default: sqlite in the workspace, or $MLFLOW_TRACKING_URI


class TrainConfig(_Section):
    """Everything ``propensity train`` needs besides the workspace."""

    rules: Path
    features: Path | None = None
    grid: GridSection | None = None
    spine: str | None = None
    horizon_days: float = Field(default=30, gt=0)
    recurring: bool = False
    qualifying_outcomes: tuple[str, ...] | None = None
    data_end: datetime | None = None
    split: SplitSection = SplitSection()
    leakage: LeakageSection = LeakageSection()
    min_positives: int = Field(default=50, ge=1)
    points_only_below: int = Field(default=500, ge=1)
    # Share of training-split negatives kept (1 = all); kept ones weigh 1/rate (training/sampling.py)
    negative_sample_rate: float = Field(default=1.0, gt=0, le=1)
    # the hand rules' activity points (and the attributes their fit criteria read) as model inputs,
    # and the rule score blended in when that ranks validation better (training/rule_inputs.py)
    rule_inputs: bool = True
    # BG/NBD expected purchases over the horizon per purchase-like type as a model input
    # (training/expected_purchases.py; extra `btyd`); off by default: on the generated repeat-purchase
    # world it did not raise the learned model's test ROC-AUC (docs/TRAINING.md has the figures)
    expected_purchases: bool = False
    model: ModelSection = ModelSection()
    points: PointsSection = PointsSection()
    calibration: CalibrationSection = CalibrationSection()
    promotion: PromotionSection = PromotionSection()
    mlflow: MlflowSection = MlflowSection()

    @model_validator(mode="after")
    def _one_spine(self) -> TrainConfig:
        if (self.grid is None) == (self.spine is None):
            raise ValueError("give exactly one of `grid` (first/last/step_days) or `spine` (a stored spine)")
        return self


def load_train_config(path: str | Path) -> TrainConfig:
    """Read and validate a training YAML.

    A relative ``rules`` or ``features`` path resolves against the folder of the YAML file itself
    (so a config and the files it names can be copied together anywhere); ``~`` expands. A path
    that does not exist is an error naming this file and the key.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise TrainConfigError(f"{path}: training config not found") from None
    except yaml.YAMLError as exc:
        raise TrainConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise TrainConfigError(f"{path}: expected a mapping at the top level")
    written = {key: raw[key] for key in PATH_KEYS if isinstance(raw.get(key), str)}
    for key, value in written.items():
        raw[key] = str(resolve_config_path(path, value))
    try:
        config = TrainConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
        )
        raise TrainConfigError(f"{path}: invalid training config: {problems}") from None
    for key, value in written.items():
        resolved = getattr(config, key)
        if not resolved.exists():
            raise TrainConfigError(
                f"{path}: {key}: {value!r} not found (looked for {resolved}; relative paths "
                "resolve against the config file's own folder)"
            )
    return config


PATH_KEYS = ("rules", "features")


def resolve_config_path(config_file: Path, value: str | Path) -> Path:
    """``value`` as written in ``config_file``: absolute as is, relative to the file's folder."""
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else (Path(config_file).resolve().parent / candidate)
