"""SHAP contributions in log-odds, and how they are carried onto the 0-5 learned score.

Log-odds
--------
:func:`feature_contributions` returns one SHAP value per feature and row, in the booster's raw
margin (log-odds), plus the base value (the model's expected margin over its training data):
``margin = base + sum of the row's values`` exactly. Two engines give the same numbers
(path-dependent TreeSHAP, agreement ~1e-12 in tests): ``shap.TreeExplainer`` and LightGBM's own
``pred_contrib=True``. The latter is the default for many rows: it runs in C++ without
copying the model, and rows are done in chunks so memory stays flat.

From log-odds to 0-5 points
---------------------------
The learned score is a monotone (non-decreasing) function of the margin,
``score = g(margin) = mapper(calibrator(sigmoid(margin)))``, but not a linear one (isotonic
calibration, then the rate-matching map onto the rule's scale). The baseline is
``g(base)``: the score of a contact whose margin is the model's average. A contact's score
difference ``g(margin) - g(base)`` is shared over groups in proportion to their log-odds:

    points_j = phi_j * (g(base + sum phi) - g(base)) / sum phi

This is the Aumann-Shapley (integrated-gradients) attribution of the function
``phi -> g(base + sum_j phi_j)`` along the straight path from the baseline to the contact:
every group has the same partial derivative ``g'`` there, so each gets ``phi_j`` times the
average slope of ``g`` on the path, i.e. the secant slope. Why this scheme:

* it sums *exactly* to ``score - baseline`` (efficiency), whatever the shape of ``g``, also
  where ``g`` is flat or has steps (isotonic calibration), since only the secant is used;
* a group that pushed the log-odds up never pulls the score down (``g`` is non-decreasing, so
  the secant slope is >= 0), and two groups with equal log-odds get equal points;
* it needs one evaluation of ``g`` per row; an exact Shapley split over groups with the
  non-additive value ``g(base + sum_{j in S} phi_j)`` would need ``2^groups`` evaluations or
  random sampling.

Its limit: the slope is shared, so a contact whose groups cancel in log-odds gets small points
for both even if one group alone would have moved the score a lot. When ``sum phi == 0`` the
secant is replaced by the slope of ``g`` at the base (a central difference), which is its limit;
the points then still sum to ``0 = score - baseline``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from propensity.pipelines.training.matrix import model_array, prepare_matrix

__all__ = [
    "carry_to_points",
    "feature_contributions",
    "group_sum",
    "score_from_margin",
]

_DERIVATIVE_STEP = 1e-4  # log-odds; a central difference when the path has zero length
_TINY = 1e-12
_ONE_THREAD_ROWS = 64  # rows explained on one thread (the service's one contact, a handful in the CLI)


def _margin_model(scorer, features: pd.DataFrame, method: str) -> pd.DataFrame | np.ndarray:
    """The booster's input: for ``pred_contrib`` one float array (categories as codes, what LightGBM
    makes of the DataFrame: the same values, without ~0.1 ms of pandas per column, most of the cost
    of explaining one row); for SHAP the DataFrame of categoricals it reads."""
    missing = [c for c in scorer.feature_names if c not in features.columns]
    if missing:
        raise ValueError(
            f"the feature frame lacks {len(missing)} column(s) the model was trained on, e.g. {missing[:5]}; "
            "build features with the model's feature config and event types"
        )
    if method == "pred_contrib":
        return model_array(features, scorer.feature_names, scorer.categories)
    matrix, _ = prepare_matrix(features, scorer.feature_names, scorer.categories)
    return matrix


def feature_contributions(
    scorer,
    features: pd.DataFrame,
    *,
    method: str = "pred_contrib",
    chunk_size: int = 20_000,
) -> tuple[pd.DataFrame, float]:
    """SHAP values of every feature for every row, in log-odds.

    Parameters
    ----------
    scorer : LearnedScorer
        The learned model (booster, feature names, categories).
    features : pandas.DataFrame
        Rows holding at least the model's features (not modified).
    method : {"pred_contrib", "shap"}
        LightGBM's ``pred_contrib`` or ``shap.TreeExplainer`` (the same TreeSHAP values).
    chunk_size : int
        Rows per call, so memory stays flat on large tables.

    Returns
    -------
    contributions : pandas.DataFrame
        One column per model feature, same index as ``features``.
    base : float
        The base value (expected margin); ``base + row sum`` is the row's margin.
    """
    if method not in ("pred_contrib", "shap"):
        raise ValueError(f"method must be 'pred_contrib' or 'shap', not {method!r}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    matrix = _margin_model(scorer, features, method)
    n_features = len(scorer.feature_names)
    if len(matrix) == 0:
        return pd.DataFrame(columns=scorer.feature_names, index=features.index, dtype="float64"), float("nan")
    parts, base = [], None
    explainer = None
    if method == "shap":
        with warnings.catch_warnings():
            # shap's own colour maps use a matplotlib API that is being deprecated; not ours to fix
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            import shap  # heavy, only when asked for

        explainer = shap.TreeExplainer(scorer.booster)
    for start in range(0, len(matrix), chunk_size):
        if explainer is not None:
            chunk = matrix.iloc[start:start + chunk_size]
            with warnings.catch_warnings():
                # "output has changed to a list of ndarray": for a binary booster it is one array
                warnings.filterwarnings("ignore", message="LightGBM binary classifier with TreeExplainer")
                values = np.asarray(explainer.shap_values(chunk), dtype="float64")
            chunk_base = float(np.ravel(explainer.expected_value)[0])
        else:
            chunk = matrix[start:start + chunk_size]
            # a few rows do not pay for waking LightGBM's OpenMP threads (the same numbers either way)
            threads = {"num_threads": 1} if len(chunk) <= _ONE_THREAD_ROWS else {}
            out = np.asarray(scorer.booster.predict(chunk, pred_contrib=True, num_iteration=scorer.best_iteration,
                                                    **threads))
            values, chunk_base = out[:, :n_features], float(out[0, n_features])
        parts.append(values)
        base = chunk_base if base is None else base
    frame = pd.DataFrame(np.vstack(parts), columns=scorer.feature_names, index=features.index)
    if getattr(scorer, "blends_rules", False):
        return _with_blend(scorer, features, frame, float(base))
    return frame, float(base)


def _with_blend(scorer, features: pd.DataFrame, booster: pd.DataFrame, base: float) -> tuple[pd.DataFrame, float]:
    """Contributions to the blended margin ``(1 - alpha) * booster + rule term`` (training/rule_blend.py):
    the booster's scaled by ``1 - alpha``, the rule term's shared over the rule columns."""
    from propensity.pipelines.training.rule_blend import Blend, blend_contributions

    blend = Blend(**scorer.blend)
    rule, constant = blend_contributions(features, scorer.input_rules, blend)
    out = booster * (1.0 - blend.alpha)
    out[rule.columns] = out[rule.columns].to_numpy() + rule.to_numpy()
    return out, (1.0 - blend.alpha) * base + constant


def group_sum(contributions: pd.DataFrame, of_feature: dict[str, str], order: Sequence[str]) -> pd.DataFrame:
    """Sum feature contributions within each group (columns in ``order``)."""
    summed = contributions.T.groupby(pd.Index([of_feature[c] for c in contributions.columns])).sum().T
    return summed.reindex(columns=list(order), fill_value=0.0)


def _sigmoid(margin: np.ndarray) -> np.ndarray:
    # numpy's, not scipy.special.expit: a cold `propensity explain` would import scipy.special for it
    with np.errstate(over="ignore"):  # exp(-margin) -> inf for a very negative margin: 1 / inf = 0
        return 1.0 / (1.0 + np.exp(-margin))


def score_from_margin(scorer, margin: np.ndarray) -> np.ndarray:
    """The learned 0-5 score of a raw margin: ``mapper(calibrator(sigmoid(margin)))``.

    The same chain :meth:`LearnedScorer.score` applies to the booster's probability.
    """
    probability = np.clip(scorer.calibrator.transform(_sigmoid(np.asarray(margin, dtype="float64"))), 0.0, 1.0)
    return np.asarray(scorer.mapper.transform(probability), dtype="float64")


def carry_to_points(scorer, logodds: pd.DataFrame, base: float) -> tuple[pd.DataFrame, np.ndarray, float]:
    """Carry log-odds contributions onto the 0-5 score (see the module docstring).

    Parameters
    ----------
    scorer : LearnedScorer
    logodds : pandas.DataFrame
        Contributions per row (features or groups; columns sum to ``margin - base``).
    base : float
        The base margin.

    Returns
    -------
    points : pandas.DataFrame
        Same shape as ``logodds``; each row sums to ``score - baseline`` (to float rounding,
        the residual is put on the row's largest entry so the sum is exact to ~1e-15).
    score : numpy.ndarray
        The learned score of each row.
    baseline : float
        ``g(base)``.
    """
    phi = logodds.to_numpy(dtype="float64")
    total = phi.sum(axis=1)
    baseline = float(score_from_margin(scorer, np.array([base]))[0])
    score = score_from_margin(scorer, base + total)
    delta = score - baseline
    flat = np.abs(total) < _TINY
    slope = np.empty_like(total)
    slope[~flat] = delta[~flat] / total[~flat]
    if flat.any():
        ends = score_from_margin(scorer, np.array([base - _DERIVATIVE_STEP, base + _DERIVATIVE_STEP]))
        slope[flat] = (ends[1] - ends[0]) / (2 * _DERIVATIVE_STEP)
    points = phi * slope[:, None]
    if points.shape[1]:
        # put the float residual where it is relatively smallest, so rows sum to delta exactly
        residual = np.where(flat, 0.0, delta) - points.sum(axis=1)
        largest = np.argmax(np.abs(points), axis=1)
        points[np.arange(len(points)), largest] += residual
    return pd.DataFrame(points, index=logodds.index, columns=logodds.columns), score, baseline
