"""Probability calibration and the map from a calibrated probability onto the rule's 0-5 scale.

Both are fitted on the ``valid`` split only (the model never saw it; ``test`` is only scored).

:class:`ProbabilityCalibrator` turns the model's raw probability into one that matches observed
conversion rates (isotonic regression, or Platt scaling when positives are few).

:class:`ScoreMapper` puts the calibrated probability on the rule model's 0-5 scale so the
thresholds people already use (bands at 2.0 and 3.5, say) keep their meaning: either "a learned
3.0 converts like a rule 3.0" (rate matching) or "as many contacts above 3.0 as the rule puts
there" (quantile matching).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import (
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
)

from propensity.pipelines.training.calibration_maps import (
    PROBABILITY_FLOOR,
    SCORE_MAX,
    SCORE_MIN,
    CalibrationMap,
    ScoreMap,
    in_range,
    logit_column,
)

__all__ = ["PROBABILITY_FLOOR", "SCORE_MAX", "SCORE_MIN", "ProbabilityCalibrator", "ScoreMapper"]

_in_range, _logit = in_range, logit_column

_CALIBRATION_METHODS = ("auto", "isotonic", "platt")
_MAPPING_METHODS = ("rate_matching", "quantile")


def _labels(y: object) -> np.ndarray:
    labels = column_or_1d(np.asarray(y))
    if labels.size == 0:
        raise ValueError("y is empty")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("y must hold 0/1 labels only")
    return labels.astype("int64")


class ProbabilityCalibrator(TransformerMixin, BaseEstimator):
    """Calibrate a fitted model's raw probabilities on held-out (``valid``) data.

    Parameters
    ----------
    method : {"auto", "isotonic", "platt"}, default "auto"
        ``"isotonic"``: ``IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1)`` on the raw
        probability. ``"platt"``: a logistic regression on ``logit(raw)`` (one feature, so it can
        only shift and stretch the raw log-odds). ``"auto"``: isotonic when there are at least
        ``min_isotonic_positives`` positives, else Platt (isotonic overfits small samples).
    min_isotonic_positives : int, default 200
        Positives needed before ``"auto"`` chooses isotonic.

    Attributes
    ----------
    method_ : str
        The method used: ``"isotonic"`` or ``"platt"``.
    estimator_ : IsotonicRegression or LogisticRegression
        The fitted calibration map.
    n_positives_ : int
        Positives in the calibration data.

    Notes
    -----
    Output is clipped to ``[1e-6, 1 - 1e-6]`` (:data:`PROBABILITY_FLOOR`). Isotonic regression
    returns exact 0 or 1 at the extremes (a block with no conversions), which no contact deserves
    and which makes log-loss and log-odds infinite. The clip adds no ties: every isotonic level
    other than 0 and 1 is a block mean of at least ``1/n``, above the floor for any
    ``n < 10**6``.

    Ranking ties: isotonic calibration is a step function, so raw probabilities inside one step
    get one calibrated probability (and one 0-5 score). AUC and lift on the calibrated
    probability can therefore be a little below the raw ones; the raw probability has the same
    order without those ties, so rank by it where a strict order matters. Platt is strictly
    increasing and keeps the raw order.

    The Platt fit uses scikit-learn's default ``C=1.0``: the penalty is on the summed log-loss,
    so it fades as the sample grows, and it keeps the slope finite when the validation classes
    separate perfectly.
    """

    def __init__(self, *, method: str = "auto", min_isotonic_positives: int = 200) -> None:
        self.method = method
        self.min_isotonic_positives = min_isotonic_positives

    def fit(self, raw_probability: object, y: object) -> ProbabilityCalibrator:
        """Learn the calibration map from validation raw probabilities and outcomes.

        Parameters
        ----------
        raw_probability : array-like of shape (n,) or (n, 1)
            The model's probabilities in [0, 1] on validation rows.
        y : array-like of shape (n,)
            0/1 outcomes of the same rows; both classes must be present.

        Returns
        -------
        self : ProbabilityCalibrator
        """
        if self.method not in _CALIBRATION_METHODS:
            raise ValueError(f"method must be one of {_CALIBRATION_METHODS}, got {self.method!r}")
        raw = _in_range(raw_probability, "raw_probability", 0.0, 1.0)
        labels = _labels(y)
        check_consistent_length(raw, labels)
        positives = int(labels.sum())
        if positives in (0, labels.size):
            raise ValueError("calibration needs both outcomes in y; the validation split has one class")
        method = self.method
        if method == "auto":
            method = "isotonic" if positives >= self.min_isotonic_positives else "platt"
        if method == "isotonic":
            estimator = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
            estimator.fit(raw, labels)
            self.knots_ = _centred_knots(estimator.X_thresholds_, estimator.y_thresholds_)
        else:
            estimator = LogisticRegression().fit(_logit(raw), labels)
        self.method_ = method
        self.estimator_ = estimator
        self.n_positives_ = positives
        return self

    def transform(self, raw_probability: object) -> np.ndarray:
        """Calibrated probabilities, in ``[1e-6, 1 - 1e-6]``.

        Parameters
        ----------
        raw_probability : array-like of shape (n,) or (n, 1)
            The model's probabilities in [0, 1].

        Returns
        -------
        numpy.ndarray of shape (n,)
        """
        check_is_fitted(self)
        if self.method_ == "isotonic" and getattr(self, "knots_", None) is None:
            # a calibrator pickled before the centred knots: its isotonic steps, as fitted
            raw = _in_range(raw_probability, "raw_probability", 0.0, 1.0)
            return np.clip(self.estimator_.predict(raw), PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)
        return self.as_map().transform(raw_probability)

    def as_map(self) -> CalibrationMap:
        """The fitted map as plain numbers (what a saved scorer keeps as JSON; applying it
        needs no scikit-learn). Same output as :meth:`transform`."""
        check_is_fitted(self)
        if self.method_ == "isotonic":
            if getattr(self, "knots_", None) is None:
                raise ValueError("this calibrator was pickled before the centred isotonic knots: it has no plain map")
            return CalibrationMap("isotonic", knots_x=tuple(map(float, self.knots_[0])),
                                  knots_y=tuple(map(float, self.knots_[1])))
        return CalibrationMap("platt", coef=float(self.estimator_.coef_[0, 0]),
                              intercept=float(self.estimator_.intercept_[0]))


def _centred_knots(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centred isotonic regression (Oron & Flournoy 2017): one knot per flat step of the isotonic
    fit, at the middle of its x range, interpolated linearly in between.

    Why: the pool-adjacent-violators steps tie every raw probability inside a step, and ties cost
    ranking (0.0026 ROC-AUC on the 20k synthetic world's test split, 0.8466 raw vs 0.8440). The
    centred fit keeps the steps' levels (the calibration) but is strictly increasing between
    them, so distinct raw values stay distinct. scikit-learn has no centred variant, hence here.
    """
    x, y = np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")
    if x.size < 2:
        return x, y
    step = np.concatenate([[0], np.cumsum(np.diff(y) != 0)])
    first = np.r_[0, np.flatnonzero(np.diff(step)) + 1]
    last = np.r_[first[1:] - 1, x.size - 1]
    return 0.5 * (x[first] + x[last]), y[first]


def _collapse_ties(x: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots of a monotone inverse: one per distinct ``x`` (sorted), at the middle of its ``s`` run.

    ``x`` and ``s`` are both non-decreasing. Where ``x`` repeats (a flat stretch), the inverse is
    undefined on the stretch; we map to its middle so the choice favours neither end.
    """
    distinct, first, count = np.unique(x, return_index=True, return_counts=True)
    last = first + count - 1
    return distinct, 0.5 * (s[first] + s[last])


class ScoreMapper(BaseEstimator):
    """Map a calibrated probability onto the rule model's 0-5 scale, fitted on validation data.

    Parameters
    ----------
    method : {"rate_matching", "quantile"}, default "rate_matching"
        ``"rate_matching"``: a learned score ``s`` means "converts like rule score ``s``". The
        rule's conversion-rate curve ``r(s) = P(y=1 | rule_score=s)`` is fitted with increasing
        isotonic regression on ``(rule_score, y)`` and the probability ``p`` maps to
        ``r^{-1}(p)``. ``"quantile"``: ``s = Q_rule(F_prob(p))``, the rule score at the same rank,
        so each band keeps the number of contacts the rule puts in it.
    n_grid : int, default 501
        Resolution. Rate matching inverts ``r`` on ``n_grid`` evenly spaced scores in [0, 5]
        (steps of 0.01 by default). Quantile matching keeps ``n_grid`` evenly spaced order
        statistics, so band shares on the fitting data match within ``1 / (n_grid - 1)``, and
        exactly (up to tied probabilities) when there are at most ``n_grid`` rows.

    Attributes
    ----------
    probability_grid_ : numpy.ndarray
        Strictly increasing probabilities: the knots of the piecewise-linear map.
    score_grid_ : numpy.ndarray
        Non-decreasing scores at those knots.
    score_below_, score_above_ : float
        Score for probabilities below the first / above the last knot.
    rule_grid_, rule_rate_ : numpy.ndarray
        Rate matching only: the rule's fitted conversion-rate curve ``r`` on the score grid
        (useful to plot); empty for quantile matching.

    Notes
    -----
    Rate matching, choices at the edges of the inverse:

    * a probability equal to a flat stretch of ``r`` (a range of rule scores converting at the
      same rate) maps to the middle of that stretch; isotonic curves are flat in places, and
      beyond the highest and lowest observed rule score they are flat by construction;
    * between two levels of ``r`` the map is linear, so it is non-decreasing in ``p`` but jumps
      across each flat stretch (from its start to its middle to its end);
    * ``p < r(0)`` maps to 0 and ``p > r(5)`` to 5: the learned model may separate contacts
      beyond anything the rule separates, and they go to the ends of the scale.

    Quantile matching: tied probabilities map to the middle of the rule scores at their ranks;
    below the lowest validation probability the map gives the lowest validation rule score, above
    the highest the highest one.

    Pure JSON round trip: :meth:`to_dict` / :meth:`from_dict` (floats survive JSON exactly).
    """

    def __init__(self, *, method: str = "rate_matching", n_grid: int = 501) -> None:
        self.method = method
        self.n_grid = n_grid

    def fit(self, probability: object, y: object | None, rule_score: object) -> ScoreMapper:
        """Learn the map on validation rows.

        Parameters
        ----------
        probability : array-like of shape (n,)
            Calibrated probabilities in [0, 1] (used by quantile matching; checked for both).
        y : array-like of shape (n,) or None
            0/1 outcomes; required for rate matching, ignored (may be None) for quantile.
        rule_score : array-like of shape (n,)
            The rule model's 0-5 score of the same rows.

        Returns
        -------
        self : ScoreMapper

        Raises
        ------
        ValueError
            For rate matching when the rule's conversion rate is flat over the whole scale
            (constant rule score, or a single outcome class): nothing to match rates against.
        """
        if self.method not in _MAPPING_METHODS:
            raise ValueError(f"method must be one of {_MAPPING_METHODS}, got {self.method!r}")
        if int(self.n_grid) != self.n_grid or self.n_grid < 2:
            raise ValueError(f"n_grid must be an integer of at least 2, got {self.n_grid}")
        prob = _in_range(probability, "probability", 0.0, 1.0)
        rule = _in_range(rule_score, "rule_score", SCORE_MIN, SCORE_MAX)
        check_consistent_length(prob, rule)
        if self.method == "rate_matching":
            if y is None:
                raise ValueError("rate matching needs the outcomes y")
            labels = _labels(y)
            check_consistent_length(prob, labels)
            self._fit_rate_matching(labels, rule)
        else:
            self._fit_quantile(prob, rule)
        return self

    def _fit_rate_matching(self, labels: np.ndarray, rule: np.ndarray) -> None:
        curve = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        curve.fit(rule, labels)
        grid = np.linspace(SCORE_MIN, SCORE_MAX, int(self.n_grid))
        rate = curve.predict(grid)
        if rate[-1] - rate[0] <= 1e-12:
            raise ValueError(
                "the rule score carries no signal on this data: its conversion rate is the same "
                f"({rate[0]:.4g}) at every score, so there is no rate to match; "
                'use ScoreMapper(method="quantile") to match band sizes instead'
            )
        # Hand-written inverse: scikit-learn has no inverse of a monotone (isotonic) curve
        self.probability_grid_, self.score_grid_ = _collapse_ties(rate, grid)
        self.score_below_, self.score_above_ = SCORE_MIN, SCORE_MAX
        self.rule_grid_, self.rule_rate_ = grid, rate

    def _fit_quantile(self, prob: np.ndarray, rule: np.ndarray) -> None:
        # Hand-written: pairing sorted probabilities with sorted rule scores is Q_rule(F_prob(p));
        # keeping order statistics (not interpolated quantiles) makes it exact when n <= n_grid.
        n = prob.size
        ranks = np.unique(np.round(np.linspace(0, n - 1, min(n, int(self.n_grid)))).astype("int64"))
        p_sorted, s_sorted = np.sort(prob)[ranks], np.sort(rule)[ranks]
        self.probability_grid_, self.score_grid_ = _collapse_ties(p_sorted, s_sorted)
        self.score_below_, self.score_above_ = float(self.score_grid_[0]), float(self.score_grid_[-1])
        self.rule_grid_, self.rule_rate_ = np.empty(0), np.empty(0)

    def transform(self, probability: object) -> np.ndarray:
        """The 0-5 score of each probability (non-decreasing in the probability).

        Parameters
        ----------
        probability : array-like of shape (n,)
            Calibrated probabilities in [0, 1].

        Returns
        -------
        numpy.ndarray of shape (n,)
            Scores in [0, 5].
        """
        check_is_fitted(self)
        # a single knot (every validation probability equal) is a step at that probability
        return self.as_map().transform(probability)

    def as_map(self) -> ScoreMap:
        """The fitted map as plain numbers (applying it needs no scikit-learn); same output as
        :meth:`transform`."""
        check_is_fitted(self)
        return ScoreMap(self.probability_grid_, self.score_grid_, float(self.score_below_), float(self.score_above_))

    def to_dict(self) -> dict[str, object]:
        """The fitted map as plain JSON-ready data (lists and floats).

        Returns
        -------
        dict
            ``method``, ``n_grid``, ``probability_grid``, ``score_grid``, ``score_below``,
            ``score_above``, ``rule_grid``, ``rule_rate``.
        """
        check_is_fitted(self)
        return {
            "method": self.method,
            "n_grid": int(self.n_grid),
            "probability_grid": self.probability_grid_.tolist(),
            "score_grid": self.score_grid_.tolist(),
            "score_below": float(self.score_below_),
            "score_above": float(self.score_above_),
            "rule_grid": self.rule_grid_.tolist(),
            "rule_rate": self.rule_rate_.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ScoreMapper:
        """Rebuild a fitted mapper from :meth:`to_dict` output.

        Parameters
        ----------
        data : dict
            As returned by :meth:`to_dict` (e.g. after a JSON round trip).

        Returns
        -------
        ScoreMapper
            Fitted; ``transform`` gives the same numbers as the original.
        """
        expected = {"method", "n_grid", "probability_grid", "score_grid", "score_below", "score_above",
                    "rule_grid", "rule_rate"}
        if set(data) != expected:
            raise ValueError(f"a ScoreMapper dict has keys {sorted(expected)}, got {sorted(data)}")
        mapper = cls(method=data["method"], n_grid=int(data["n_grid"]))
        if mapper.method not in _MAPPING_METHODS:
            raise ValueError(f"method must be one of {_MAPPING_METHODS}, got {mapper.method!r}")
        plain = ScoreMap.from_dict(data)  # checks the grids
        mapper.probability_grid_, mapper.score_grid_ = plain.probability_grid, plain.score_grid
        mapper.score_below_, mapper.score_above_ = plain.score_below, plain.score_above
        mapper.rule_grid_ = np.asarray(data["rule_grid"], dtype="float64")
        mapper.rule_rate_ = np.asarray(data["rule_rate"], dtype="float64")
        return mapper
