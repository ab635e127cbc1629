"""Round points, caps and range edges to values a person writes in a rules file: the one place.

Two callers, two needs, one module:

* :func:`nice_round` (``propensity tune``): a ladder of readable values, ``1, 2, 3, ... 9, 10,
  15, 20, 25, 30, 40, 50, 75, 100, 150, ...`` above the file's own *resolution* (the finest step
  its hand points use, :func:`points_resolution`): a file written in whole points gets no
  ``0.075`` or ``7.5``; one written in tenths (``0.2, 0.5``) gets ``0.1 ... 0.9, 1, 1.5, 2 ...``.
* :func:`human_round` (learned points): a fixed step by magnitude, or a multiple of a given step.
* :func:`readable_edge`: range edges of fit criteria to two significant digits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = ["human_round", "nice_ceil", "nice_round", "points_resolution", "readable_edge"]

# Mantissas of the decades above the resolution's: the numbers marketing teams write (10, 15,
# 20, 25, 30, 40, 50, 75, 100, ...); neighbours are at most 1.5x apart, so rounding moves a
# value by at most ~22% and keeps the order of the rules.
_MANTISSAS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5)
_RESOLUTIONS = (1.0, 0.5, 0.1, 0.05, 0.01)


def _ladder(resolution: float, top: float) -> np.ndarray:
    """Readable magnitudes from ``resolution`` up past ``top``."""
    # the resolution's own decade in whole steps (1, 2, ... 9 x resolution), then the mantissas
    values = [resolution * m for m in range(1, 10)]
    decade = 10 * resolution
    while decade <= top * 10:
        values += [decade * m for m in _MANTISSAS]
        decade *= 10
    return np.array(sorted({round(v, 10) for v in values}))


def nice_round(value: float, *, resolution: float = 1.0) -> float:
    """The nearest readable value on a log scale, keeping the sign (see the module docstring).

    Magnitudes below ``resolution / 2`` become 0, those between it and ``resolution`` become
    ``resolution``; above, the nearest ladder value in log terms.

    Examples
    --------
    >>> nice_round(37.0), nice_round(-18.0), nice_round(6.3), nice_round(0.075), nice_round(0.27, resolution=0.1)
    (40.0, -20.0, 6.0, 0.0, 0.3)
    """
    if not math.isfinite(value):
        raise ValueError(f"cannot round {value!r}")
    if not resolution > 0:
        raise ValueError(f"resolution must be positive, got {resolution!r}")
    size = abs(value)
    if size < resolution / 2:
        return 0.0
    ladder = _ladder(resolution, size)
    best = ladder[np.argmin(np.abs(np.log(ladder) - math.log(max(size, resolution))))]
    return float(round(math.copysign(best, value), 10)) + 0.0  # + 0.0: no "-0.0" in a rules file


def nice_ceil(value: float, *, resolution: float = 1.0) -> float:
    """The smallest readable value (same ladder as :func:`nice_round`) at or above ``value`` > 0."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"nice_ceil needs a positive finite value, got {value!r}")
    ladder = _ladder(resolution, value)
    return float(ladder[np.searchsorted(ladder, value - 1e-9)])


def points_resolution(points: Iterable[float]) -> float:
    """The coarsest step (1, 0.5, 0.1, 0.05, 0.01) that every nonzero value is a multiple of.

    ``(50, 10, 5, 1)`` -> 1; ``(0.5, 0.2, 20)`` -> 0.1; no points -> 1.
    """
    values = [abs(float(p)) for p in points if p]
    for step in _RESOLUTIONS:
        if all(abs(v / step - round(v / step)) < 1e-6 for v in values):
            return step
    return _RESOLUTIONS[-1]


def human_round(value: float, step: float | None = None) -> float:
    """Round to a value a person would write, or to a multiple of ``step`` (``0``: unchanged).

    Human steps by magnitude: 0.1 below 1, 0.5 below 10, 1 below 50, 5 below 200, 10 above.
    """
    if step == 0:
        return float(value)
    if step is None:
        size = abs(value)
        step = 0.1 if size < 1 else 0.5 if size < 10 else 1.0 if size < 50 else 5.0 if size < 200 else 10.0
    rounded = round(value / step) * step
    return float(round(rounded, 10)) + 0.0  # + 0.0: no "-0.0" in a rules file


def readable_edge(value: float) -> float:
    """A range edge as a person would write it (2 significant digits)."""
    if value == 0:
        return 0.0
    digits = 1 - int(np.floor(np.log10(abs(value))))
    return float(round(value, digits))
