"""Shapley values of feature groups between two states of the same row (a step of a change path).

Why not the difference of the two states' TreeSHAP values: TreeSHAP shares each interaction
between the features that take part in it, so when only a contact's events changed, the SHAP value
of its (unchanged) industry moves too, and a difference of SHAP values credits "industry" with
part of what the new events did. Here the question is the one a step asks: the score went from
``f(a)`` to ``f(b)``; which of the groups that changed made it move? The value of a coalition ``S``
of changed groups is the score of the hybrid row that takes ``S``'s features from ``b`` and the
rest from ``a``; each group's part is its Shapley value in that game (the "baseline Shapley" of
Sundararajan & Najmi, 2020, over groups). So:

* the parts add up to ``f(b) - f(a)`` exactly (efficiency; the two ends are the model's own scores);
* a group whose features are equal in both states gets exactly 0 (it is not a player);
* no TreeSHAP at all, so categorical splits and the calibration chain need no special care.

With ``k`` changed groups the exact value needs ``2**k`` hybrid rows; above
:data:`EXACT_UP_TO` groups it is estimated from :data:`PERMUTATIONS` random orders (seeded), and
the parts of every order add up to ``f(b) - f(a)`` on their own, so the estimate still sums
exactly; only the split between groups is then approximate.

Hand-written: shap's Exact and Permutation explainers take one background for all rows, while
here each row has its own reference (its earlier state) and only its changed groups play.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["EXACT_UP_TO", "PERMUTATIONS", "group_shapley"]

EXACT_UP_TO = 10  # 1,024 hybrid rows per row and step at most
PERMUTATIONS = 64
_SEED = 20261203


def _subsets(k: int) -> np.ndarray:
    """All ``2**k`` coalitions of ``k`` players as a boolean matrix; row ``m`` is the bits of ``m``."""
    codes = np.arange(2 ** k)[:, None]
    return ((codes >> np.arange(k)) & 1).astype(bool)


def _exact(values: np.ndarray, k: int) -> np.ndarray:
    """Shapley values from the values of all ``2**k`` coalitions (indexed by their bit code)."""
    codes = np.arange(2 ** k)
    sizes = np.array([int(c).bit_count() for c in codes])
    weights = np.array([math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k) for s in range(k)])
    out = np.empty(k)
    for g in range(k):
        without = codes[(codes >> g) & 1 == 0]
        out[g] = np.sum(weights[sizes[without]] * (values[without | (1 << g)] - values[without]))
    return out


def _orders(k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random orders (antithetic pairs) and the coalitions along each: prefixes of every order."""
    half = [rng.permutation(k) for _ in range(PERMUTATIONS // 2)]
    orders = np.array([p for order in half for p in (order, order[::-1])])
    masks = np.zeros((len(orders), k + 1, k), dtype=bool)
    for i, order in enumerate(orders):
        for j in range(1, k + 1):
            masks[i, j, order[:j]] = True
    return orders, masks.reshape(-1, k)


def group_shapley(score_of: Callable[[np.ndarray], np.ndarray], before: np.ndarray, after: np.ndarray,
                  group_of_column: np.ndarray, n_groups: int) -> np.ndarray:
    """Each group's Shapley part of the move from ``before`` to ``after``, row by row.

    Parameters
    ----------
    score_of : callable
        Model matrix (rows x columns) -> scores.
    before, after : numpy.ndarray
        The two states' model matrices (rows x columns, the same columns; NaN = missing).
    group_of_column : numpy.ndarray of int
        The group of each column (0 .. n_groups - 1).
    n_groups : int

    Returns
    -------
    numpy.ndarray
        Rows x groups; row ``r`` sums to ``score_of(after[r]) - score_of(before[r])`` (to float
        rounding) and is 0 on every group whose columns are equal in both states.
    """
    before = np.asarray(before, dtype="float64")
    after = np.asarray(after, dtype="float64")
    same = (before == after) | (np.isnan(before) & np.isnan(after))
    out = np.zeros((len(before), n_groups))
    rng = np.random.default_rng(_SEED)
    plans, hybrids = [], []
    for r in range(len(before)):
        changed = np.unique(group_of_column[~same[r]])
        k = len(changed)
        if k == 0:
            continue
        position = np.full(n_groups, -1)
        position[changed] = np.arange(k)
        column_player = position[group_of_column]  # -1: the column's group did not change
        if k <= EXACT_UP_TO:
            masks, orders = _subsets(k), None
        else:
            orders, masks = _orders(k, rng)
        takes_after = np.zeros((len(masks), before.shape[1]), dtype=bool)
        playing = column_player >= 0
        takes_after[:, playing] = masks[:, column_player[playing]]
        hybrids.append(np.where(takes_after, after[r], before[r]))
        plans.append((r, changed, orders, len(masks)))
    if not plans:
        return out
    values = np.asarray(score_of(np.vstack(hybrids)), dtype="float64")
    start = 0
    for r, changed, orders, size in plans:
        v = values[start:start + size]
        start += size
        k = len(changed)
        if orders is None:
            parts = _exact(v, k)
            total = v[-1] - v[0]  # every group from after, minus none
        else:
            along = v.reshape(len(orders), k + 1)
            parts = np.zeros(k)
            for order, path in zip(orders, along):
                np.add.at(parts, order, np.diff(path))
            parts /= len(orders)
            total = along[0, -1] - along[0, 0]
        parts[np.argmax(np.abs(parts))] += total - parts.sum()  # float residual: the sum is exact
        out[r, changed] = parts
    return out
