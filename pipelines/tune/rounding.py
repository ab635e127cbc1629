"""Round points to values a person would write in a rules file."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["nice_round"]

# Mantissas per decade: the numbers marketing teams write (1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 15,
# 20, 25, 30, 40, 50, 75, 100, ...); neighbours are at most 1.5x apart, so rounding moves a value
# by at most ~22% and keeps the order of the rules.
_MANTISSAS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5)


def _ladder(decade: int) -> list[float]:
    return [m * 10.0 ** decade for m in _MANTISSAS]


def nice_round(value: float, *, smallest: float = 0.01) -> float:
    """The nearest "nice" value on a log scale, keeping the sign.

    ``1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150, ...`` and the
    same per decade below 1 (``0.1, 0.15, 0.2, 0.25, ...``). Values whose magnitude is below
    ``smallest`` become 0.

    Examples
    --------
    >>> nice_round(37.0), nice_round(-18.0), nice_round(0.27), nice_round(6.0)
    (40.0, -20.0, 0.25, 5.0)
    """
    if not math.isfinite(value):
        raise ValueError(f"cannot round {value!r}")
    size = abs(value)
    if size < smallest:
        return 0.0
    decade = math.floor(math.log10(size))
    candidates = np.array(_ladder(decade - 1) + _ladder(decade) + _ladder(decade + 1))
    best = candidates[np.argmin(np.abs(np.log(candidates) - math.log(size)))]
    return float(round(math.copysign(best, value), 10)) + 0.0
