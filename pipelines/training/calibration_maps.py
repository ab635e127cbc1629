"""The fitted calibration and 0-5 maps as plain numbers: applying them needs numpy only.

:class:`~propensity.pipelines.training.calibration.ProbabilityCalibrator` and
:class:`~propensity.pipelines.training.calibration.ScoreMapper` are scikit-learn estimators: they
are fitted with scikit-learn (isotonic and logistic regression). What scoring needs of them once
fitted is small, a few knots or two coefficients, and is written here once: the estimators'
``transform`` calls it, and a saved scorer keeps the same numbers as JSON
(``calibration.json``), so loading a model to score or explain imports no scikit-learn, whose
import (with ``scipy.stats``) costs about 1 s of CPU in a cold process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PROBABILITY_FLOOR", "SCORE_MAX", "SCORE_MIN", "CalibrationMap", "ScoreMap", "in_range", "logit_column",
           "vector"]

PROBABILITY_FLOOR = 1e-6
"""Calibrated probabilities are kept in ``[PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR]``."""

SCORE_MIN, SCORE_MAX = 0.0, 5.0

# Raw probabilities are clipped this close to 0/1 before the logit, only to keep it finite; it is
# far below PROBABILITY_FLOOR so it does not merge raw probabilities that Platt keeps apart.
_LOGIT_EPS = 1e-15


def vector(values: object, name: str) -> np.ndarray:
    """``values`` as a finite float64 vector; shape ``(n,)`` or ``(n, 1)`` accepted (as
    scikit-learn's ``column_or_1d``)."""
    array = np.asarray(values, dtype="float64")
    if array.ndim == 2 and array.shape[1] == 1:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional (shape (n,) or (n, 1)), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


def in_range(values: object, name: str, low: float, high: float) -> np.ndarray:
    array = vector(values, name)
    if array.min() < low or array.max() > high:
        raise ValueError(f"{name} has values outside [{low:g}, {high:g}]")
    return array


def logit_column(p: np.ndarray) -> np.ndarray:
    """``logit(p)`` as the one-column matrix Platt's logistic regression reads."""
    clipped = np.clip(p, _LOGIT_EPS, 1.0 - _LOGIT_EPS)
    return (np.log(clipped) - np.log1p(-clipped)).reshape(-1, 1)


@dataclass(frozen=True)
class CalibrationMap:
    """Raw booster probability -> calibrated probability, in ``[1e-6, 1 - 1e-6]``.

    ``"isotonic"``: linear interpolation between the centred isotonic knots ``(knots_x,
    knots_y)``. ``"platt"``: ``sigmoid(coef * logit(raw) + intercept)``, computed as scikit-learn's
    ``LogisticRegression.predict_proba`` does (same operations, same floats).
    """

    method: str
    knots_x: tuple[float, ...] = ()
    knots_y: tuple[float, ...] = ()
    coef: float = 0.0
    intercept: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in ("isotonic", "platt"):
            raise ValueError(f"a calibration map's method is 'isotonic' or 'platt', got {self.method!r}")
        if self.method == "isotonic" and (not self.knots_x or len(self.knots_x) != len(self.knots_y)):
            raise ValueError("an isotonic calibration map needs knots_x and knots_y of equal, non-zero length")

    def transform(self, raw_probability: object) -> np.ndarray:
        raw = in_range(raw_probability, "raw_probability", 0.0, 1.0)
        if self.method == "isotonic":
            calibrated = np.interp(raw, np.asarray(self.knots_x), np.asarray(self.knots_y))
        else:
            from scipy.special import (
                expit,  # scikit-learn's sigmoid; scipy.special alone is light
            )

            margin = logit_column(raw) @ np.array([[self.coef]]) + np.array([self.intercept])
            calibrated = expit(margin.reshape(-1))
        return np.clip(calibrated, PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)

    def as_map(self) -> CalibrationMap:
        return self

    def to_dict(self) -> dict:
        return {"method": self.method, "knots_x": list(self.knots_x), "knots_y": list(self.knots_y),
                "coef": self.coef, "intercept": self.intercept}

    @classmethod
    def from_dict(cls, data: dict) -> CalibrationMap:
        return cls(method=data["method"], knots_x=tuple(map(float, data["knots_x"])),
                   knots_y=tuple(map(float, data["knots_y"])), coef=float(data["coef"]),
                   intercept=float(data["intercept"]))


@dataclass(frozen=True)
class ScoreMap:
    """Calibrated probability -> 0-5 score: piecewise linear through ``(probability_grid,
    score_grid)``, ``score_below`` / ``score_above`` outside it (a single knot: a step there)."""

    probability_grid: np.ndarray
    score_grid: np.ndarray
    score_below: float
    score_above: float

    @classmethod
    def of(cls, probability_grid: object, score_grid: object, score_below: float, score_above: float) -> ScoreMap:
        grid = np.asarray(probability_grid, dtype="float64")
        scores = np.asarray(score_grid, dtype="float64")
        if grid.ndim != 1 or grid.size == 0 or grid.shape != scores.shape:
            raise ValueError("probability_grid and score_grid must be non-empty lists of equal length")
        if np.any(np.diff(grid) <= 0) or np.any(np.diff(scores) < 0):
            raise ValueError("probability_grid must be strictly increasing and score_grid non-decreasing")
        return cls(grid, scores, float(score_below), float(score_above))

    @classmethod
    def from_dict(cls, data: dict) -> ScoreMap:
        """From :meth:`to_dict`, or ScoreMapper's (its rule curve keys are not needed to score)."""
        return cls.of(data["probability_grid"], data["score_grid"], data["score_below"], data["score_above"])

    def as_map(self) -> ScoreMap:
        return self

    def to_dict(self) -> dict:
        return {"probability_grid": self.probability_grid.tolist(), "score_grid": self.score_grid.tolist(),
                "score_below": self.score_below, "score_above": self.score_above}

    def transform(self, probability: object) -> np.ndarray:
        prob = in_range(probability, "probability", 0.0, 1.0)
        if self.probability_grid.size == 1:
            knot, value = self.probability_grid[0], self.score_grid[0]
            score = np.where(prob < knot, self.score_below, np.where(prob > knot, self.score_above, value))
        else:
            score = np.interp(prob, self.probability_grid, self.score_grid, left=self.score_below,
                              right=self.score_above)
        return np.clip(score, SCORE_MIN, SCORE_MAX)
