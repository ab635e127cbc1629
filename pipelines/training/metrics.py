"""Evaluation metrics for a propensity model: ranking, calibration and lift at the top of the list.

ROC-AUC, PR-AUC (average precision) and the Brier score come from :mod:`sklearn.metrics`. The
expected calibration error, lift and precision/recall at a fraction of the list are written here
because scikit-learn has none of them in the form we need (see each function for why).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.utils.validation import check_consistent_length, column_or_1d

__all__ = [
    "bootstrap_ci",
    "classification_metrics",
    "expected_calibration_error",
    "group_counts",
    "lift_at",
    "lift_key",
    "precision_recall_at",
    "resample_indices",
]

# Bootstrap resamples are drawn this many index cells at a time, so memory stays near 16 MB
# whatever the number of rows or resamples.
_BOOTSTRAP_CELLS_PER_CHUNK = 2_000_000


def _binary_labels(y: object) -> np.ndarray:
    labels = column_or_1d(np.asarray(y))
    if labels.size == 0:
        raise ValueError("y is empty")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("y must hold 0/1 labels only")
    return labels.astype("int64")


def _finite(values: object, name: str) -> np.ndarray:
    array = column_or_1d(np.asarray(values, dtype="float64"))
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


def _probabilities(values: object, name: str = "p") -> np.ndarray:
    array = _finite(values, name)
    if array.size and (array.min() < 0.0 or array.max() > 1.0):
        raise ValueError(f"{name} has values outside [0, 1]")
    return array


def _check_fraction(fraction: float) -> None:
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")


def expected_calibration_error(
    y: object, p: object, n_bins: int = 10, strategy: str = "uniform"
) -> float:
    """Expected calibration error: the row-weighted mean gap ``|mean(y) - mean(p)|`` over bins.

    Written by hand because scikit-learn has no ECE: ``calibration_curve`` returns the per-bin
    means but not the bin sizes needed to weight them. The bins are the ones
    ``sklearn.calibration.calibration_curve`` uses, so this is the weighted mean gap of the
    reliability diagram it draws.

    Parameters
    ----------
    y : array-like of shape (n,)
        0/1 outcomes.
    p : array-like of shape (n,)
        Predicted probabilities in [0, 1].
    n_bins : int, default 10
        Number of bins.
    strategy : {"uniform", "quantile"}, default "uniform"
        ``"uniform"``: edges ``0, 1/n_bins, ..., 1``. ``"quantile"``: edges at the
        ``0, 1/n_bins, ..., 1`` quantiles of ``p``; equal probabilities always share a bin, so
        with heavy ties some bins are empty.

    Returns
    -------
    float
        ECE in [0, 1]. Empty bins contribute nothing.

    Notes
    -----
    With edges ``e_0 < ... < e_k``, bin ``i`` holds ``e_i < p <= e_{i+1}`` and the first bin also
    holds ``p == e_0``: bins are closed on the right, so ``p == 1`` goes in the last bin and a
    probability exactly on an inner edge (``0.5`` with 10 uniform bins) goes in the lower bin.
    """
    labels = _binary_labels(y)
    prob = _probabilities(p)
    check_consistent_length(labels, prob)
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    n_bins = int(n_bins)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        edges = np.quantile(prob, np.linspace(0.0, 1.0, n_bins + 1))
    else:
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    # side="left" on the inner edges makes the bins closed on the right, as calibration_curve does
    bin_id = np.searchsorted(edges[1:-1], prob, side="left")
    sum_p = np.bincount(bin_id, weights=prob, minlength=n_bins)
    sum_y = np.bincount(bin_id, weights=labels, minlength=n_bins)
    # |mean(y) - mean(p)| * count == |sum(y) - sum(p)|, so empty bins add exactly zero
    return float(np.abs(sum_y - sum_p).sum() / prob.size)


def _top_count(n: int, fraction: float) -> int:
    # round() first so 0.3 * 10 (3.0000000000000004) is 3 rows, not 4
    return max(1, math.ceil(round(fraction * n, 9)))


def _positives_in_top(labels: np.ndarray, score: np.ndarray, k: int) -> float:
    """Expected positives among the top ``k`` by score when ties at the cut are broken at random.

    Rows scoring above the cut score are all in; of the rows tied at the cut, ``k - n_above`` are
    in, and they count at the tied rows' mean conversion rate. This is deterministic and does not
    depend on row order (a stable sort would favour whichever rows come first in the frame, which
    matters for the 0-5 rule score where whole bands tie).
    """
    cut = np.partition(score, score.size - k)[score.size - k]
    above = score > cut
    tied = score == cut
    n_above = int(above.sum())
    return float(labels[above].sum() + (k - n_above) * labels[tied].mean())


def precision_recall_at(y: object, score: object, fraction: float) -> tuple[float, float]:
    """Precision and recall when the top ``fraction`` of rows by ``score`` are contacted.

    Written by hand: scikit-learn's ``precision_recall_curve`` works per threshold, not per share
    of the list, and cannot split a group of tied scores at the cut.

    Parameters
    ----------
    y : array-like of shape (n,)
        0/1 outcomes.
    score : array-like of shape (n,)
        Any score where higher means more likely (probability, 0-5 score).
    fraction : float
        Share of rows taken from the top, in (0, 1]. The top is ``ceil(fraction * n)`` rows
        (at least one).

    Returns
    -------
    precision : float
        Conversion rate among the top rows.
    recall : float
        Share of all positives that are in the top rows; NaN when there are no positives.

    Notes
    -----
    Ties at the cut: when several rows share the score at the cut and only some of them fit, each
    tied row counts with weight ``(places left) / (number tied)``, the expected result of
    breaking the tie at random. The answer is deterministic and independent of row order.
    """
    labels = _binary_labels(y)
    values = _finite(score, "score")
    check_consistent_length(labels, values)
    _check_fraction(fraction)
    k = _top_count(labels.size, fraction)
    hits = _positives_in_top(labels, values, k)
    positives = labels.sum()
    recall = hits / positives if positives else math.nan
    return hits / k, float(recall)


def lift_at(y: object, score: object, fraction: float = 0.1) -> float:
    """Lift in the top ``fraction``: conversion rate there divided by the overall rate.

    Written by hand: scikit-learn has no lift. Ties at the cut are handled as in
    :func:`precision_recall_at` (tied rows count at their mean rate, order-independent).

    Parameters
    ----------
    y : array-like of shape (n,)
        0/1 outcomes.
    score : array-like of shape (n,)
        Any score where higher means more likely.
    fraction : float, default 0.1
        Share of rows taken from the top, in (0, 1]; the top is ``ceil(fraction * n)`` rows.

    Returns
    -------
    float
        Lift (1.0 = no better than random); NaN when ``y`` has no positives.
    """
    labels = _binary_labels(y)
    if not labels.any():
        # still validate the other arguments before answering
        precision_recall_at(labels, score, fraction)
        return math.nan
    precision, _ = precision_recall_at(labels, score, fraction)
    return float(precision / labels.mean())


def lift_key(fraction: float) -> str:
    """The metric name for lift at ``fraction``: ``0.1 -> "lift_top10"``, ``0.025 -> "lift_top2.5"``."""
    return f"lift_top{fraction * 100:g}"


def classification_metrics(
    y: object, probability: object, score: object | None = None, top_fraction: float = 0.1,
    *, rank_by: str = "probability",
) -> dict[str, float]:
    """The standard metric set for one model on one split.

    Parameters
    ----------
    y : array-like of shape (n,)
        0/1 outcomes.
    probability : array-like of shape (n,)
        Predicted probabilities in [0, 1]; Brier and ECE are computed on it.
    score : array-like of shape (n,), optional
        The score the list is ranked by (e.g. the 0-5 score); lift uses it when given, else
        ``probability``.
    top_fraction : float, default 0.1
        Share of the list for the lift.
    rank_by : {"probability", "score"}, default "probability"
        What ROC-AUC and PR-AUC rank by. ``"score"`` (needs ``score``) measures a model on its
        own score, the convention of ``propensity train`` and ``compare``: a probability fitted
        isotonically onto a rule score has ties the rule score has not, so it ranks worse.

    Returns
    -------
    dict[str, float]
        ``roc_auc``, ``pr_auc`` (average precision), ``brier``, ``ece`` (10 uniform bins),
        ``lift_top{100 * top_fraction}`` (see :func:`lift_key`), ``n``, ``positives`` (ints) and
        ``base_rate``. With a single class in ``y`` the AUCs are NaN (and lift too when there are
        no positives) instead of raising.
    """
    labels = _binary_labels(y)
    prob = _probabilities(probability, "probability")
    check_consistent_length(labels, prob)
    ranking = prob if score is None else _finite(score, "score")
    check_consistent_length(labels, ranking)
    if rank_by not in ("probability", "score") or (rank_by == "score" and score is None):
        raise ValueError(f"rank_by must be 'probability' or 'score' (with a score), not {rank_by!r}")
    ranked = ranking if rank_by == "score" else prob
    both_classes = 0 < labels.sum() < labels.size
    return {
        "roc_auc": float(roc_auc_score(labels, ranked)) if both_classes else math.nan,
        "pr_auc": float(average_precision_score(labels, ranked)) if both_classes else math.nan,
        "brier": float(brier_score_loss(labels, prob, pos_label=1)),
        "ece": expected_calibration_error(labels, prob),
        lift_key(top_fraction): lift_at(labels, ranking, top_fraction),
        "n": int(labels.size),
        "positives": int(labels.sum()),
        "base_rate": float(labels.mean()),
    }


def resample_indices(n: int, n_boot: int, seed: int):
    """Yield ``(m, n)`` blocks of bootstrap row indices, ``n_boot`` rows in all (one generator
    seeded with ``seed``: the same resamples wherever they are drawn)."""
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _BOOTSTRAP_CELLS_PER_CHUNK // n)
    done = 0
    while done < n_boot:
        m = min(per_chunk, n_boot - done)
        yield rng.integers(0, n, size=(m, n))
        done += m


def group_counts(labels: np.ndarray, group: np.ndarray, n_groups: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative draws per score group (``group``: each row's rank among the distinct
    scores) in each resample of ``idx``: two ``(m, n_groups)`` arrays."""
    m = idx.shape[0]
    flat = (np.arange(m)[:, None] * n_groups + group[idx]).ravel()
    drawn = labels[idx].ravel().astype("float64")
    pos = np.bincount(flat, weights=drawn, minlength=m * n_groups).reshape(m, n_groups)
    neg = np.bincount(flat, weights=1.0 - drawn, minlength=m * n_groups).reshape(m, n_groups)
    return pos, neg


def _bootstrap_auc(labels: np.ndarray, score: np.ndarray, chunks) -> np.ndarray:
    """ROC-AUC of every resample at once (Mann-Whitney with ties counted half).

    Rows are grouped by distinct score once; a resample is then just the number of positive and
    negative draws per group, and AUC = sum_g pos_g * (neg below g + neg_g / 2) / (pos * neg).
    This equals ``roc_auc_score`` on the resampled rows.
    """
    distinct, group = np.unique(score, return_inverse=True)
    out = []
    for idx in chunks:
        pos, neg = group_counts(labels, group, distinct.size, idx)
        neg_below = np.cumsum(neg, axis=1) - neg
        total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)
        auc[(total_pos == 0) | (total_neg == 0)] = math.nan
        out.append(auc)
    return np.concatenate(out)


def bootstrap_ci(
    y: object,
    score: object,
    metric: Callable[[np.ndarray, np.ndarray], float] = roc_auc_score,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``metric(y, score)``.

    Parameters
    ----------
    y : array-like of shape (n,)
        0/1 outcomes.
    score : array-like of shape (n,) or (n, k)
        Passed to ``metric`` after resampling rows. A 2-D score resamples its columns together,
        which gives a paired interval, e.g. for the AUC difference of two models with
        ``metric=lambda y, s: roc_auc_score(y, s[:, 0]) - roc_auc_score(y, s[:, 1])``.
    metric : callable, default ``sklearn.metrics.roc_auc_score``
        ``metric(y, score) -> float``. ``roc_auc_score`` itself (with 1-D scores) takes a
        vectorised path that gives the same numbers as calling it on each resample.
    n_boot : int, default 1000
        Number of resamples.
    seed : int, default 0
        Seed of the ``numpy.random.Generator`` drawing the resamples.
    alpha : float, default 0.05
        The interval is the ``alpha/2`` and ``1 - alpha/2`` quantiles of the resampled metric.

    Returns
    -------
    low, high : float
        NaN, NaN when no resample can be scored.

    Notes
    -----
    Resamples in which ``y`` has a single class are skipped for every metric (AUC-type metrics
    are undefined there), so the interval is conditional on both classes being drawn.
    """
    labels = _binary_labels(y)
    values = np.asarray(score, dtype="float64")
    if values.ndim not in (1, 2):
        raise ValueError("score must be 1-D or 2-D")
    check_consistent_length(labels, values)
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    chunks = resample_indices(labels.size, n_boot, seed)
    if metric is roc_auc_score and values.ndim == 1:
        stats = _bootstrap_auc(labels, _finite(values, "score"), chunks)
    else:
        stats = np.full(n_boot, math.nan)
        row = 0
        for idx in chunks:
            for sample in idx:
                drawn = labels[sample]
                if 0 < drawn.sum() < drawn.size:
                    stats[row] = metric(drawn, values[sample])
                row += 1
    stats = stats[~np.isnan(stats)]
    if stats.size == 0:
        return math.nan, math.nan
    low, high = np.quantile(stats, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)
