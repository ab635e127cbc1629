"""The one fit routine: the learned points and the learned model fitted on a labelled, split frame.

``train`` calls it on the training set; the walk-forward backtest
(:mod:`propensity.pipelines.compare.backtest`) calls it at each past cut-off. Written once so the
two cannot drift apart: what the backtest refits at a cut-off is what `train` would have fitted
there (the same design, calibration and mapping onto 0-5).

The frame holds ``split`` (train / valid / test), ``label``, ``rule_score`` and the feature columns;
models are fitted on ``train``, early-stopped and calibrated on ``valid``, and every row is scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.rules.score import rescale_raw_points, score_frame
from propensity.pipelines.training.calibration import ProbabilityCalibrator, ScoreMapper
from propensity.pipelines.training.config import CalibrationSection, PointsSection
from propensity.pipelines.training.matrix import learnable_categories
from propensity.pipelines.training.model import (
    FittedModel,
    ModelConfig,
    fit_lightgbm,
    prepare_matrix,
)
from propensity.pipelines.training.points import (
    PointsModelConfig,
    fit_points_model,
    rule_design_matrix,
)
from propensity.pipelines.training.rule_blend import (
    Blend,
    choose_blend,
    rule_input_columns,
    rule_score_of,
)

__all__ = ["FittedLearned", "FittedPoints", "fit_learned", "fit_points", "score_probability"]


@dataclass
class FittedPoints:
    """The learned points file and what it gives every row of the frame."""

    rules: RuleSet
    score: np.ndarray  # 0-5, the learned file's rule score
    probability: np.ndarray  # that score calibrated on valid (isotonic)
    fit: object  # the points model's fit (its report)


@dataclass
class FittedLearned:
    """The fitted LightGBM model, its calibration and map onto 0-5, and every row's scores."""

    model: FittedModel
    categories: dict
    calibrator: ProbabilityCalibrator
    mapper: ScoreMapper
    probability: np.ndarray
    score: np.ndarray  # 0-5
    blend: Blend | None = None  # the rule score blended in (alpha 0: the model alone); None: rules not an input
    # categorical columns whose rare values read as missing (matrix.learnable_categories): (dropped, of)
    pooled: dict[str, tuple[int, int]] = field(default_factory=dict)


def _masks(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    split = frame["split"].to_numpy()
    return split == "train", split == "valid", frame["label"].to_numpy()


def score_probability(frame: pd.DataFrame, score: str | np.ndarray) -> np.ndarray:
    """A 0-5 score turned into a probability by isotonic regression on the valid rows, so that
    Brier and ECE compare across models that only rank."""
    _, is_valid, y = _masks(frame)
    values = (frame[score].to_numpy() if isinstance(score, str) else np.asarray(score)) / 5.0
    return ProbabilityCalibrator(method="isotonic").fit(values[is_valid], y[is_valid]).transform(values)


def fit_points(frame: pd.DataFrame, raw: pd.DataFrame, contacts: pd.DataFrame | None, rules: RuleSet,
               config: PointsSection, *, prior: str | None = None) -> FittedPoints:
    """Learn the points of ``rules``' activities and fit criteria from the train rows.

    ``raw``: the hand rules' uncapped points of the frame's rows (same order). ``prior`` overrides
    ``config.prior`` (``train`` uses the hand weights as prior when it fits the points model only).
    """
    is_train, is_valid, y = _masks(frame)
    design = rule_design_matrix(raw, contacts, rules)
    learned = fit_points_model(design[is_train], y[is_train], rules,
                               PointsModelConfig(prior=prior or config.prior, l2=config.l2),
                               design[is_valid], y[is_valid])
    # the learned file changes points per activity: rescale the raw points, not only caps and fit
    score = score_frame(rescale_raw_points(raw, rules, learned.rules), contacts, learned.rules)["rule_score"].to_numpy()
    return FittedPoints(rules=learned.rules, score=score, probability=score_probability(frame, score), fit=learned)


def fit_learned(frame: pd.DataFrame, features: list[str], model_config: ModelConfig,
                calibration: CalibrationSection, *, weights: np.ndarray | None = None,
                rules: RuleSet | None = None) -> FittedLearned:
    """LightGBM on the train rows (``weights``: per-row weights of the train rows, e.g. from
    negative sampling), early-stopped on valid; its probability calibrated on valid and mapped
    onto the rules' 0-5 scale there.

    ``rules``: the hand rules whose columns (``rule__*``, training/rule_inputs.py) are among
    ``features``; the rule score recomputed from them is blended in when that ranks the valid rows
    better, so that on valid the result ranks at least as well as the rules (by construction).
    """
    is_train, is_valid, y = _masks(frame)
    _, categories = prepare_matrix(frame[is_train], features)  # categories as the train rows have them
    categories, pooled = learnable_categories(frame[is_train], categories, y[is_train])
    X_all, _ = prepare_matrix(frame, features, categories)
    fitted = fit_lightgbm(X_all[is_train], y[is_train], X_all[is_valid], y[is_valid], model_config,
                          weight_train=weights)
    raw = fitted.predict_raw(X_all)
    blend = None
    if rules is not None:
        if not set(rule_input_columns(rules)) <= set(features):
            raise ValueError("fit_learned(rules=...) needs the rules' input columns among the features")
        rule_score = rule_score_of(frame, rules)  # what the scorer recomputes at scoring time
        blend = choose_blend(raw[is_valid], rule_score[is_valid], y[is_valid])
        raw = blend.apply(raw, rule_score)
    calibrator = ProbabilityCalibrator(method=calibration.method).fit(raw[is_valid], y[is_valid])
    probability = calibrator.transform(raw)
    mapper = ScoreMapper(method=calibration.score_mapping).fit(
        probability[is_valid], y[is_valid], frame["rule_score"].to_numpy()[is_valid])
    return FittedLearned(model=fitted, categories=categories, calibrator=calibrator, mapper=mapper,
                         probability=probability, score=mapper.transform(probability), blend=blend, pooled=pooled)
