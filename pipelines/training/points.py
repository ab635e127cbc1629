"""The learned points model: retrain a rule file's points from outcomes, keep everything else.

The rules stay the rules: same activities (event, ``where``, half-life, expiry, ``per_value``),
same fit criteria, same ``scale``, bands, thresholds and roll-up. Only each rule's ``points``
(and, for a capped activity, its ``cap``) change, so the learned file
(``rules.learned.yaml``) diffs line by line against the hand file and ``propensity score`` runs
it as is.

Features (:func:`rule_design_matrix`)
-------------------------------------
One column per activity and one per fit criterion:

* activity ``a``: ``x_a = capped_a / (points_a * weight_a)``, the activity's current capped,
  decayed, expiring contribution per unit of ``points x weight``. Uncapped, ``x_a`` is the
  (decayed, ``value``-weighted) event count; capped, it is that count passed through the
  current cap's saturation.
* fit criterion ``f``: 1 when the contact meets it, else 0 (whatever its points are).

Why this column handles the cap exactly: the cap ``cap * (1 - exp(-raw / cap))`` is not linear
in points, but it is *homogeneous*: multiplying both ``points`` and ``cap`` by ``m > 0``
multiplies the capped contribution by ``m``. So each activity keeps its shape (cap relative to
its points) and the model learns one multiplier per activity: a learned value ``v_a`` per unit
of ``x_a`` becomes ``points' = v_a / weight`` (``weight`` is kept as in the hand file) and
``cap' = cap * v_a / (points * weight)``, and the learned file's contribution is exactly
``v_a * x_a``. Two limits, flagged in :attr:`LearnedPoints.coefficients` (``note``):
an activity whose hand ``points x weight`` is 0 has no unit (an all-zero column) and is kept
as is; and the engine only caps positive raws, so a *capped* activity whose learned sign
differs from its hand sign is exported with the same structure but its contribution is no
longer exactly ``v_a * x_a`` for heavy users.

Model
-----
An L2-regularised logistic regression ``logit P(convert) = b + sum_j beta_j x_j``, minimising
``sum_i logloss_i + l2 / 2 * sum_j (sd_j * (beta_j - beta0_j))**2`` (``sd_j`` the training
standard deviation of column ``j``: the penalty is on standardised coefficients, so a rule
measured in email opens and one measured in trials are shrunk alike; the intercept is not
penalised). ``l2`` is ``1 / C`` in scikit-learn's terms; ``None`` picks it from ``l2_grid`` by
validation log-loss. Prior centre ``beta0``:

* ``prior="zero"``: ``beta0 = 0`` (ordinary ridge logistic regression).
* ``prior="hand"``: ``beta0 = c * hand_points`` where ``c`` (log-odds per hand point) is the
  slope of a one-feature logistic regression of the label on the hand total; the model then
  learns deviations from the hand weights, and a huge ``l2`` gives back the hand weights.

scikit-learn has no prior-centred L2 penalty (nor an offset), so the fit is a hand-written
penalised log-likelihood minimised by ``scipy.optimize.minimize`` (L-BFGS-B, analytic gradient);
there are a few dozen parameters, so it is cheap.

From log-odds to points
-----------------------
Rules have no intercept: a contact with no activity and no fit scores 0 points under both files,
and that anchor is kept (the logistic intercept only sets the probability level, never the
ranking; it is reported as :attr:`LearnedPoints.intercept` for whoever wants probabilities
back). The learned total is ``T' = k * sum_j beta_j x_j`` with one positive factor ``k``
(points per log-odds), and a rule's learned value is ``k * beta_j`` points per unit.

``k`` is chosen so that the learned total lines up with the hand total where the file's
meaning lives, on the validation rows (training rows without a validation set): least squares
over a few quantiles, ``k = sum_q Q_hand(q) Q_logodds(q) / sum_q Q_logodds(q)**2``. By default
the quantile levels are those of the hand file's own edges: for every band above the first and
every threshold, the share of rows the hand rules put below it. Matching there keeps the size
of each band and the pass rate of each threshold (how many contacts are "hot", how many are
PQLs) as close to the hand file's as one factor allows, which is what the 0-5 score means to
its users; matching the median instead would be pulled by the bulk of cold contacts, whose
points are mostly fit points. The learned and hand totals differ in shape (the model may trust
fit more than the hand file does), so one factor cannot match every quantile: on the synthetic
world the hot share went from 15% to 11% and the PQL share from 22% to 24%, while the middle
band grew. The ``scale`` itself is kept as is. ``config.quantiles`` overrides the levels
(e.g. ``(0.5, 0.9)``).

Rounding
--------
Points are rounded to values a person would write (``round_to=None``): steps of 0.1 below 1,
0.5 below 10, 1 below 50, 5 below 200, 10 above; or to multiples of ``round_to``; ``round_to=0``
keeps exact values. Caps are rescaled with the rounded points and rounded the same way. A rule
whose learned ``|points|`` is below ``min_abs_points`` gets 0 points but stays in the file, so
the learned file keeps the hand file's structure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Literal

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit

from propensity.pipelines.rules.config import Activity, FitCriterion, RuleSet
from propensity.pipelines.rules.rounding import human_round  # the one rounding module (re-exported)
from propensity.pipelines.rules.score import apply_caps, fit_points, scale_points

__all__ = [
    "LearnedPoints",
    "PointsModelConfig",
    "edge_quantiles",
    "fit_points_model",
    "human_round",
    "points_per_logodds",
    "rule_design_matrix",
]

_FALLBACK_L2 = 1.0  # when l2 is None and there is no validation set to choose it on


@dataclass(frozen=True)
class PointsModelConfig:
    """How to learn points.

    Parameters
    ----------
    l2 : float or None
        Penalty strength (``1 / C``) on standardised coefficients (0: plain maximum likelihood);
        ``None`` picks it from ``l2_grid`` by validation log-loss (``1.0`` when there is no
        validation set).
    l2_grid : tuple of float
        Candidates for ``l2``.
    prior : {"zero", "hand"}
        Centre of the penalty: zero, or the hand points (learn deviations from them).
    round_to : float or None
        ``None``: human rounding (see the module docstring); ``0``: no rounding; else the step.
    min_abs_points : float
        Learned ``|points|`` below this become 0 (the rule stays in the file).
    quantiles : tuple of float or None
        Quantile levels at which the learned total is matched to the hand total to choose ``k``;
        ``None``: the levels of the hand file's band edges and thresholds on the same rows
        (median, 75th and 90th percentile when no row reaches any of them).
    """

    l2: float | None = None
    l2_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
    prior: Literal["zero", "hand"] = "zero"
    round_to: float | None = None
    min_abs_points: float = 0.0
    quantiles: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.l2 is not None and not self.l2 >= 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")
        if not self.l2_grid or any(not g >= 0 for g in self.l2_grid):
            raise ValueError("l2_grid needs at least one value, all >= 0")
        if self.prior not in ("zero", "hand"):
            raise ValueError(f"prior must be 'zero' or 'hand', got {self.prior!r}")
        if self.round_to is not None and not self.round_to >= 0:
            raise ValueError(f"round_to must be >= 0 or None, got {self.round_to}")
        if not self.min_abs_points >= 0:
            raise ValueError("min_abs_points must be >= 0")
        if self.quantiles is not None and (not self.quantiles or any(not 0 < q < 1 for q in self.quantiles)):
            raise ValueError("quantiles must lie strictly between 0 and 1")


@dataclass(frozen=True)
class LearnedPoints:
    """A fitted points model and the rule set it writes.

    Attributes
    ----------
    rules : RuleSet
        The learned rules (``{name}_learned``): hand structure, learned points and caps.
    coefficients : pandas.DataFrame
        One row per rule: ``rule, kind`` (activity / fit), ``coefficient`` (log-odds per unit),
        ``weight``, ``current_points``, ``learned_points`` (rounded, as written),
        ``current_per_unit``, ``learned_per_unit`` (``points x weight``), ``current_cap``,
        ``learned_cap``, ``sign_flipped``, ``note``.
    intercept : float
        The logistic intercept (log-odds of a contact with all-zero columns).
    l2 : float
        The penalty used.
    k_points_per_logodds : float
        Points per unit of log-odds (``learned per-unit points = k * coefficient``).
    validation_log_loss : dict of float to float
        Mean validation log-loss per candidate ``l2`` (empty when ``l2`` was given).
    """

    rules: RuleSet
    coefficients: pd.DataFrame
    intercept: float
    l2: float
    k_points_per_logodds: float
    validation_log_loss: dict[float, float] = field(default_factory=dict)


def _units(rules: RuleSet) -> np.ndarray:
    """Hand points per unit of each design column (``points x weight``; fit: ``points``)."""
    return np.array(
        [a.points * a.weight for a in rules.activities] + [f.points for f in rules.fit], dtype="float64"
    )


def _column_names(rules: RuleSet) -> list[str]:
    return [a.name for a in rules.activities] + [f.name for f in rules.fit]


def rule_design_matrix(raw_points: pd.DataFrame, contacts: pd.DataFrame | None, rules: RuleSet) -> pd.DataFrame:
    """The points model's features: per-unit activity contributions and fit indicators.

    Parameters
    ----------
    raw_points : DataFrame
        Output of :func:`propensity.pipelines.rules.score.activity_points` for ``rules`` (executed):
        ``contact_id, as_of, points__{activity}`` (uncapped).
    contacts : DataFrame or None
        Contact attributes (needed when ``rules`` has fit criteria).
    rules : RuleSet

    Returns
    -------
    DataFrame
        Same index as ``raw_points``; one float column per activity (named after it) holding
        ``capped points / (points x weight)`` (0 for an activity with ``points x weight == 0``),
        then one 0/1 column per fit criterion.
    """
    missing = [f"points__{a.name}" for a in rules.activities if f"points__{a.name}" not in raw_points]
    if missing:
        raise ValueError(f"raw points lack columns {missing}: compute them with activity_points for {rules.name!r}")
    capped = apply_caps(raw_points, rules)
    columns: dict[str, np.ndarray] = {}
    for activity in rules.activities:
        unit = activity.points * activity.weight
        values = capped[f"points__{activity.name}"].to_numpy(dtype="float64")
        columns[activity.name] = values / unit if unit != 0 else np.zeros_like(values)
    if rules.fit:
        # one point per criterion turns fit_points into the 0/1 match indicator
        unit_fit = tuple(c.model_copy(update={"points": 1.0}) for c in rules.fit)
        matched = fit_points(raw_points, contacts, rules.model_copy(update={"fit": unit_fit}))
        for criterion in rules.fit:
            columns[criterion.name] = matched[f"points__{criterion.name}"].to_numpy(dtype="float64")
    return pd.DataFrame(columns, index=raw_points.index)


# --- the penalised logistic regression -------------------------------------------------------


@dataclass(frozen=True)
class _Logistic:
    intercept: float
    beta: np.ndarray

    def logit(self, x: np.ndarray) -> np.ndarray:
        return self.intercept + x @ self.beta


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, beta0: np.ndarray) -> _Logistic:
    """Minimise ``sum logloss + l2/2 * ||sd * (beta - beta0)||^2`` (intercept free).

    Solved on centred, standardised columns (same minimiser, better conditioned); columns that
    do not vary get ``sd = 1`` and so sit at their prior centre.
    """
    n = len(y)
    mean = x.mean(axis=0)
    sd = x.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    z = (x - mean) / sd
    g0 = beta0 * sd

    # einsum rather than `@`: a tall, narrow product is memory-bound, and multi-threaded BLAS
    # only adds contention (several times slower on a busy machine, measured)
    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        b, g = theta[0], theta[1:]
        eta = b + np.einsum("ij,j->i", z, g)
        loss = np.sum(np.logaddexp(0.0, eta) - y * eta)
        residual = expit(eta) - y
        deviation = g - g0
        value = (loss + 0.5 * l2 * deviation @ deviation) / n
        grad = np.concatenate(([residual.sum()], np.einsum("ij,i->j", z, residual) + l2 * deviation)) / n
        return value, grad

    rate = np.clip(y.mean(), 1e-6, 1 - 1e-6)
    start = np.concatenate(([math.log(rate / (1 - rate))], g0))
    result = minimize(
        objective, start, jac=True, method="L-BFGS-B", options={"maxiter": 5_000, "gtol": 1e-10, "ftol": 1e-14}
    )
    b, g = result.x[0], result.x[1:]
    beta = g / sd
    return _Logistic(intercept=float(b - mean @ beta), beta=beta)


def _log_loss(model: _Logistic, x: np.ndarray, y: np.ndarray) -> float:
    eta = model.logit(x)
    return float(np.mean(np.logaddexp(0.0, eta) - y * eta))


def _hand_prior(x: np.ndarray, y: np.ndarray, units: np.ndarray) -> np.ndarray:
    """``c * hand points``: ``c`` is the log-odds per hand point of the hand total on train."""
    total = (x @ units)[:, None]
    slope = _fit_logistic(total, y, 0.0, np.zeros(1)).beta[0]
    if not slope > 0:
        raise ValueError(
            "prior='hand' needs hand rules that rank conversions on the training rows "
            f"(log-odds per hand point is {slope:.3g}); use prior='zero'"
        )
    return slope * units


_FALLBACK_QUANTILES = (0.5, 0.75, 0.9)


def edge_quantiles(hand_total: np.ndarray, rules: RuleSet) -> tuple[float, ...]:
    """Shares of rows the hand rules put below each band edge and threshold (0 and 1 dropped):
    the quantiles at which learned log-odds are matched to the hand rules' points."""
    score = scale_points(hand_total, rules)
    shares = [np.mean(score < band.min_score) for band in rules.bands[1:]]
    shares += [np.mean(hand_total < threshold) for threshold in rules.thresholds.values()]
    levels = sorted({round(float(q), 6) for q in shares if 0 < q < 1})
    return tuple(levels) or _FALLBACK_QUANTILES


def points_per_logodds(logodds: np.ndarray, hand_total: np.ndarray, quantiles: tuple[float, ...]) -> float:
    """The positive factor that best maps ``logodds`` onto ``hand_total`` at ``quantiles`` (least squares)."""
    learned_q = np.quantile(logodds, quantiles)
    hand_q = np.quantile(hand_total, quantiles)
    denominator = learned_q @ learned_q
    k = (hand_q @ learned_q) / denominator if denominator > 0 else float("nan")
    if not (math.isfinite(k) and k > 0):
        raise ValueError(
            f"cannot put the learned log-odds on the rules' scale: at quantiles {quantiles} the hand "
            f"totals are {np.round(hand_q, 3).tolist()} and the learned log-odds "
            f"{np.round(learned_q, 3).tolist()}; no positive factor matches them"
        )
    return float(k)


# --- rounding and the rules file -------------------------------------------------------------


def _learned_activity(
    activity: Activity, per_unit: float, config: PointsModelConfig
) -> tuple[Activity, str]:
    unit = activity.points * activity.weight
    if unit == 0:
        return activity, "zero points x weight: no unit to learn, kept as is"
    points = per_unit / activity.weight
    if abs(points) < config.min_abs_points:
        points = 0.0
    points = human_round(points, config.round_to)
    update: dict[str, float] = {"points": points}
    note = ""
    if activity.cap is not None and points != 0:
        exact_cap = activity.cap * abs(points / activity.points)
        cap = human_round(exact_cap, config.round_to)
        update["cap"] = cap if cap > 0 else exact_cap
        if points * activity.points < 0:
            note = "sign flipped: the engine caps positive raws only, so this capped rule is approximate"
    elif points * activity.points < 0:
        note = "sign flipped"
    return activity.model_copy(update=update), note


def _learned_criterion(criterion: FitCriterion, value: float, config: PointsModelConfig) -> tuple[FitCriterion, str]:
    points = 0.0 if abs(value) < config.min_abs_points else value
    points = human_round(points, config.round_to)
    note = "sign flipped" if points * criterion.points < 0 else ""
    return criterion.model_copy(update={"points": points}), note


def _learned_rules(
    rules: RuleSet, per_unit: np.ndarray, config: PointsModelConfig, description: str
) -> tuple[RuleSet, list[str]]:
    n_activities = len(rules.activities)
    activities, notes = [], []
    for activity, value in zip(rules.activities, per_unit[:n_activities]):
        learned, note = _learned_activity(activity, float(value), config)
        activities.append(learned)
        notes.append(note)
    criteria = []
    for criterion, value in zip(rules.fit, per_unit[n_activities:]):
        learned, note = _learned_criterion(criterion, float(value), config)
        criteria.append(learned)
        notes.append(note)
    data = rules.model_dump(by_alias=True)
    data.update(
        name=f"{rules.name}_learned",
        description=description,
        activities=[a.model_dump(by_alias=True) for a in activities],
        fit=[c.model_dump(by_alias=True) for c in criteria],
    )
    return RuleSet.model_validate(data), notes  # validated again: the file must load as is


def _coefficient_frame(
    rules: RuleSet, learned: RuleSet, beta: np.ndarray, notes: list[str]
) -> pd.DataFrame:
    rows = []
    pairs = list(zip(rules.activities, learned.activities)) + list(zip(rules.fit, learned.fit))
    for (old, new), coefficient, note in zip(pairs, beta, notes):
        weight = getattr(old, "weight", 1.0)
        rows.append(
            {
                "rule": old.name,
                "kind": "activity" if isinstance(old, Activity) else "fit",
                "coefficient": float(coefficient),
                "weight": weight,
                "current_points": old.points,
                "learned_points": new.points,
                "current_per_unit": old.points * weight,
                "learned_per_unit": new.points * weight,
                "current_cap": getattr(old, "cap", None),
                "learned_cap": getattr(new, "cap", None),
                "sign_flipped": bool(old.points * new.points < 0),
                "note": note,
            }
        )
    return pd.DataFrame(rows)


def _as_matrix(x: pd.DataFrame, names: list[str], what: str) -> np.ndarray:
    missing = [n for n in names if n not in x.columns]
    if missing:
        raise ValueError(f"{what} lacks rule columns {missing}: build it with rule_design_matrix")
    values = x[names].to_numpy(dtype="float64")
    if not np.isfinite(values).all():
        raise ValueError(f"{what} has missing or infinite values")
    return values


def _as_labels(y: pd.Series | np.ndarray, n: int, what: str) -> np.ndarray:
    labels = np.asarray(y, dtype="float64")
    if labels.shape != (n,):
        raise ValueError(f"{what} has {labels.shape[0] if labels.ndim else 0} labels for {n} rows")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError(f"{what} must be 0/1")
    return labels


def fit_points_model(
    X_train: pd.DataFrame,
    y_train: pd.Series | np.ndarray,
    rules: RuleSet,
    config: PointsModelConfig = PointsModelConfig(),
    X_valid: pd.DataFrame | None = None,
    y_valid: pd.Series | np.ndarray | None = None,
    current_total_valid: pd.Series | np.ndarray | None = None,
    *,
    learned_at: date | None = None,
) -> LearnedPoints:
    """Learn the rules' points from outcomes (see the module docstring for the math).

    Parameters
    ----------
    X_train, y_train : DataFrame, array-like
        Design matrix (:func:`rule_design_matrix`) and 0/1 labels of the training rows.
    rules : RuleSet
        The hand rules whose structure is kept.
    config : PointsModelConfig
    X_valid, y_valid : DataFrame, array-like, optional
        Validation rows: choose ``l2`` (when ``config.l2`` is None) and ``k``.
    current_total_valid : array-like, optional
        The hand rules' total points on the validation rows (``score_frame(...)["points"]``);
        by default recomputed from ``X_valid`` (the same number, by construction).
    learned_at : date, optional
        Date written in the learned rules' description (default: today, UTC).

    Returns
    -------
    LearnedPoints
    """
    names = _column_names(rules)
    x = _as_matrix(X_train, names, "X_train")
    y = _as_labels(y_train, len(x), "y_train")
    if y.min() == y.max():
        raise ValueError("y_train needs both positives and negatives to learn points")
    if (X_valid is None) != (y_valid is None):
        raise ValueError("give X_valid and y_valid together")
    units = _units(rules)
    beta0 = _hand_prior(x, y, units) if config.prior == "hand" else np.zeros(len(names))

    losses: dict[float, float] = {}
    if X_valid is not None:
        x_valid = _as_matrix(X_valid, names, "X_valid")
        y_valid_ = _as_labels(y_valid, len(x_valid), "y_valid")
    else:
        x_valid, y_valid_ = x, y
    if config.l2 is not None:
        l2 = config.l2
        model = _fit_logistic(x, y, l2, beta0)
    elif X_valid is None:
        l2 = _FALLBACK_L2
        model = _fit_logistic(x, y, l2, beta0)
    else:
        fits = {g: _fit_logistic(x, y, g, beta0) for g in config.l2_grid}
        losses = {g: _log_loss(m, x_valid, y_valid_) for g, m in fits.items()}
        l2 = min(losses, key=losses.get)
        model = fits[l2]

    if current_total_valid is None or X_valid is None:
        hand_total = x_valid @ units
    else:
        hand_total = np.asarray(current_total_valid, dtype="float64")
        if hand_total.shape != (len(x_valid),):
            raise ValueError("current_total_valid must have one value per validation row")
    quantiles = config.quantiles or edge_quantiles(hand_total, rules)
    k = points_per_logodds(x_valid @ model.beta, hand_total, quantiles)

    when = learned_at or datetime.now(UTC).date()
    description = (
        f"Points of {rules.name!r} learned from outcomes on {when.isoformat()}: L2 logistic regression "
        f"(prior={config.prior}, l2={l2:g}) on {len(y)} rows with {int(y.sum())} conversions; "
        f"{k:.4g} points per unit of log-odds, matching the hand total at quantiles "
        f"{[round(q, 3) for q in quantiles]} of the {'validation' if X_valid is not None else 'training'} rows."
    )
    learned, notes = _learned_rules(rules, k * model.beta, config, description)
    return LearnedPoints(
        rules=learned,
        coefficients=_coefficient_frame(rules, learned, model.beta, notes),
        intercept=model.intercept,
        l2=float(l2),
        k_points_per_logodds=k,
        validation_log_loss=losses,
    )
